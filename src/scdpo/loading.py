"""The one loader of tokenizers and models: every stage that reads a model folder goes through
`load_tokenizer` / `load_model`, with the experiment's `trust_remote_code`.

A folder the pipeline saved keeps the modeling code of a base model the config trusted
(`model.trust_remote_code`): its config.json names that code (`auto_map`), and the pipeline
saves such a folder only when the config trusted it, so a reader that is not told otherwise
trusts exactly those folders (`has_remote_code`). A reader given the experiment's setting (the
base model, the training recipe's `trust_remote_code`) passes it as it is. InternLM2, the one
remote-code model of config/paper.yaml, is converted to the Llama layout at `model_base`
(scdpo.convert) and runs with native code after that.

transformers is imported inside the functions: the data env (pairs) has no torch.
"""

from __future__ import annotations

import json
from pathlib import Path


def has_remote_code(path: str | Path) -> bool:
    """Whether a model folder names its own modeling or tokenizer code (`auto_map`)."""
    for name in ("config.json", "tokenizer_config.json"):
        file = Path(path) / name
        if file.is_file() and "auto_map" in json.loads(file.read_text()):
            return True
    return False


def _trust(path: str | Path, trust_remote_code: bool | None) -> bool:
    return has_remote_code(path) if trust_remote_code is None else bool(trust_remote_code)


def load_tokenizer(path: str | Path, trust_remote_code: bool | None = None):
    """The tokenizer of a model folder; `trust_remote_code=None`: trusted if the folder names
    its code (a folder this pipeline saved, see the module docstring)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=_trust(path, trust_remote_code))


def load_model(path: str | Path, trust_remote_code: bool | None = None, **kwargs):
    """A causal LM from a model folder (from_pretrained keyword arguments in `kwargs`)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, trust_remote_code=_trust(path, trust_remote_code), **kwargs
    )
