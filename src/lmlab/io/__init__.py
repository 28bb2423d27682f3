"""Files: lmlab's own run directories, and the formats of other tools read and written.

- checkpoint.py: a run directory (config.json, model.safetensors, train_state.safetensors);
- sources.py: what `lmlab.load` reads — the ordered table of sources (run directory, Hugging Face
  directory, ARPA file, and the GGUF and registered-name slots) and the `LoadedModel` they give;
- hf/: Hugging Face directories, one converter per model_type (hf/gpt2.py), driven by the model's
  own parameter names;
- arpa.py: ARPA back-off files (KenLM, SRILM) <-> lmlab n-gram models;
- export.py: runs written as Hugging Face directories or ARPA files.
Tokenizer files live in lmlab/tokenize, networks in lmlab/models. This package imports nothing on
its own, so `import lmlab.io.checkpoint` stays light.
"""
