"""Language models: loading any Hugging Face causal LM (``loading``), the embedded SmolLM2 included."""
