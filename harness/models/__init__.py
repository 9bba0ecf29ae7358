"""Model backends behind one interface (``base.ModelBackend``), chosen by spec string
(``registry.create_backend``): ``hf:``, ``lora:``, ``openai:``, ``replay:`` and the embedded default."""

from harness.models.base import BackendOptions, Generation, GenerationConfig, ModelBackend, Prompt
from harness.models.registry import DEFAULT_SPEC, create_backend, resolve_template

__all__ = ["DEFAULT_SPEC", "BackendOptions", "Generation", "GenerationConfig", "ModelBackend", "Prompt",
           "create_backend", "resolve_template"]
