"""Models: one factory for the VLM kinds (tiny, smol, pretrained) and the small CLIP, all through
Hugging Face classes: `factory` (`build_model`, `load_vlm`), `vlm` (the `VLM` wrapper), `clip`,
`tokenizer`, `spec` (the `model` and `clip` config sections), `limits`, `smol`, `qwen2_vl`,
`tiny_real`. Import from the submodules: this package imports none of them, so that the config
(`models.spec`) loads without torch."""
