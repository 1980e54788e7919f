"""What the sentence encoder reads of a statement: one spelling, and negation made explicit.

Part of the backward mapping (`statements/mapping.py`, step 2). The encoder (MiniLM) reads
"it is not the case that I am certain" next to "I am certain" and "I am not unsure" next to
"I am unsure": a negation changes little of a sentence embedding. So before a text is embedded:

1. **[choice]** `canonical`: lower case, typographic apostrophes as "'", contractions written out
   ("I'm" -> "i am", "can't" -> "cannot", "wouldn't" -> "would not", "it's" -> "it is"), British
   spellings as American ("sceptical" -> "skeptical", "favour" -> "favor"), no final punctuation,
   single spaces. The references are embedded in the same form, so "I'm" and "I am" meet.
2. **[choice]** `rewrite`, double negation (litotes) as the degree it states:
   - "not un-X" for X in sure, certain, confident, convinced, likely, reasonable, clear, and
     "not im-/implausible", "not doubtful": "fairly X" ("not unsure" -> "fairly sure", level 3);
   - "not without (some, any, a few) doubt(s) / reservations / misgivings / hesitation / qualms /
     uncertainty / concerns": "with some doubts" (level 2); "not without (some) confidence /
     certainty": "with some confidence" (3);
   - "not in doubt", "not open to doubt" / "question": "beyond doubt" (5);
   negated degrees, X one of sure, certain, confident, convinced, positive, clear, right, correct,
   accurate:
   - "not at all / remotely / in the least / the least bit / even slightly X", "not X at all / in
     the least / whatsoever": "completely unsure" (level 1); "not at all likely": "very unlikely";
   - "not entirely / completely / fully / totally / wholly / altogether / quite / absolutely /
     perfectly / very / too / so / that / really X": "somewhat unsure" (level 2: "not completely
     sure" is the pool's level 2).
3. **[choice]** `negated_clause`, a statement negated as a whole by a wrapper: "it is not the case /
   not true / not so that X", "I (would not, cannot, could not, do not) say / claim / swear /
   pretend / promise / guarantee (that) X", "I do not think / believe (that) X". The encoder reads
   X alone and the level is `NEGATED[level of X]`: **[choice]** 5, 4, 3 -> 2 ("it is not the case
   that I am certain" = "not certain"), 2 -> 4 ("it is not true that I have doubts"), 1 -> 3 ("I
   would not say I have no idea"). X must itself read as a statement, else the text is unparsed.
4. **[choice]** `has_content`: a text of function words only ("and I", "and this is", "with", "and so
   on", "and I am not": a cut-off clause) is no statement and stays unparsed; the encoder and the
   detector would read some of them as statements (they are close to no ordinary tail either).
Other negations ("not sure", "not at all confident", "no doubt", "nowhere near certain") are
left to the encoder and the read-out, which have many of them among the references.
"""

from __future__ import annotations

import re

from mmboundary.steps import require_text

#: Level of "not X" for the level of X (a wrapper negation, see the module docstring).
NEGATED: dict[int, int] = {1: 3, 2: 4, 3: 2, 4: 2, 5: 2}

_CONTRACTIONS = [
    (r"\bcan't\b", "cannot"), (r"\bwon't\b", "will not"), (r"\bain't\b", "is not"), (r"\bshan't\b", "shall not"),
    (r"\b(\w+)n't\b", r"\1 not"), (r"\bi'm\b", "i am"), (r"\bi'd\b", "i would"), (r"\bi've\b", "i have"),
    (r"\bi'll\b", "i will"), (r"\b(it|that|there|what|here|who)'s\b", r"\1 is"), (r"\b(you|we|they)'re\b", r"\1 are"),
    (r"\b(you|we|they)'ve\b", r"\1 have"), (r"\b(you|we|they|it|that|one)'d\b", r"\1 would"),
    (r"\b(you|we|they|it|that)'ll\b", r"\1 will"),
]
_CONTRACTIONS_RE = [(re.compile(a), b) for a, b in _CONTRACTIONS]
_SPELLINGS = {"sceptical": "skeptical", "sceptic": "skeptic", "scepticism": "skepticism", "favour": "favor",
              "favourable": "favorable", "favours": "favors", "towards": "toward", "colour": "color",
              "judgement": "judgment", "practise": "practice", "analyse": "analyze", "recognise": "recognize"}
_SPELLING_RE = re.compile(r"\b(%s)\b" % "|".join(_SPELLINGS))

_LITOTES = [
    (re.compile(r"\bnot\s+(?:at\s+all\s+|entirely\s+|totally\s+|completely\s+)?un(sure|certain|confident|convinced"
                r"|likely|reasonable|clear|justified|founded|reliable|trustworthy)\b"), r"fairly \1"),
    (re.compile(r"\bnot\s+im(probable|plausible)\b"), r"fairly \1"),
    (re.compile(r"\bnot\s+(?:very\s+|too\s+|that\s+)?doubtful\b"), "fairly sure"),
    (re.compile(r"\bnot\s+without\s+(?:some\s+|any\s+|a\s+few\s+|a\s+little\s+|certain\s+|my\s+)?(?:doubts?|reservations?"
                r"|misgivings?|hesitations?|qualms?|uncertainty|uncertainties|concerns?|worries|caveats?)\b"),
     "with some doubts"),
    (re.compile(r"\bnot\s+without\s+(?:some\s+|any\s+|a\s+little\s+)?(?:confidence|certainty|conviction)\b"),
     "with some confidence"),
    (re.compile(r"\bnot\s+(?:in|open\s+to)\s+(?:any\s+)?(?:doubt|question)\b"), "beyond doubt"),
]

_DEGREE = r"(?:sure|certain|confident|convinced|positive|clear|right|correct|accurate)"
_NEGATED_DEGREE = [
    (re.compile(r"\bnot\s+(?:at\s+all|remotely|in\s+the\s+least|the\s+least\s+bit|even\s+slightly|in\s+any\s+way"
                r"|one\s+bit|even\s+a\s+little|the\s+slightest\s+bit)\s+" + _DEGREE + r"\b"), "completely unsure"),
    (re.compile(r"\bnot\s+" + _DEGREE + r"\s+(?:at\s+all|in\s+the\s+least|whatsoever|in\s+the\s+slightest)\b"),
     "completely unsure"),
    (re.compile(r"\bnot\s+(?:at\s+all|remotely|even\s+slightly)\s+(?:likely|probable)\b"), "very unlikely"),
    (re.compile(r"\bnot\s+(?:entirely|completely|fully|totally|wholly|altogether|quite|absolutely|perfectly|100%"
                r"|(?:one|a)\s+hundred\s+percent|very|too|so|that|overly|particularly|terribly|really|all\s+that)\s+"
                + _DEGREE + r"\b"), "somewhat unsure"),
]

_CONNECTIVE = r"(?:(?:and|but|though|although|yet|so|while)\s+)?"
_WRAPPER = re.compile(
    r"^" + _CONNECTIVE + r"(?:"
    r"(?:it|this|that)\s+is\s+not\s+(?:the\s+case|true|so|a\s+given)\s+that"
    r"|(?:i|one|you|anyone|we)\s+(?:would\s+not|could\s+not|cannot|can\s+not|do\s+not|will\s+not|should\s+not"
    r"|would\s+never|could\s+never|can\s+never)\s+(?:really\s+|honestly\s+|truthfully\s+)?"
    r"(?:say|claim|swear|pretend|promise|guarantee|assert|argue)(?:\s+that)?"
    r"|(?:i|we)\s+(?:do\s+not|would\s+not|cannot)\s+(?:really\s+)?(?:think|believe|feel)(?:\s+that)?"
    r")\s+(?P<clause>.+)$")


def canonical(text: str) -> str:
    """The form the encoder reads: see the module docstring, step 1 (a TypeError naming `text` when
    it is no `str`)."""
    t = " ".join(require_text(text, "text", "canonical").replace("’", "'").replace("‘", "'").split()).lower()
    for pattern, repl in _CONTRACTIONS_RE:
        t = pattern.sub(repl, t)
    t = _SPELLING_RE.sub(lambda m: _SPELLINGS[m.group(1)], t)
    return t.rstrip(".!?;: ").strip()


def rewrite(text: str) -> str:
    """`canonical(text)` with its double negations replaced by the degree they state (step 2)."""
    t = canonical(text)
    for pattern, repl in _LITOTES + _NEGATED_DEGREE:
        t = pattern.sub(repl, t)
    return t


def negated_clause(text: str) -> str | None:
    """The clause X of "it is not the case that X" and the like (step 3), in canonical form, or None
    when `text` (canonical) is no such wrapper."""
    m = _WRAPPER.match(text)
    if m is None:
        return None
    clause = m.group("clause").strip()
    return clause if len(clause.split()) >= 1 else None


#: Words that alone make no statement (step 4).
FUNCTION_WORDS = frozenset(
    "a an the and but though although yet so while with without of to on in at for by from as or nor if then "
    "than that this these those it its i me my mine we us our you your he him his she her they them their one "
    "am is are was were be been being do does did have has had will would shall should can cannot could may "
    "might must not no there here what which who whom whose also too very just only even still etc".split())


def has_content(form: str) -> bool:
    """Whether `form` (canonical) has a word outside `FUNCTION_WORDS` (step 4)."""
    return any(w not in FUNCTION_WORDS for w in re.findall(r"[a-z0-9%]+", form))


def encoder_input(text: str) -> tuple[str, bool]:
    """What the encoder reads for `text` and whether its level is negated afterwards
    (`NEGATED`): (rewritten text, False), or (the wrapped clause, True)."""
    t = rewrite(text)
    clause = negated_clause(t)
    if clause is not None:
        return clause, True
    return t, False
