"""Internal confidence of a step (method.md section 2): the tokens of each step (`spans`), and
normalisation, fusion and levels of the four signals (`fusion`)."""
