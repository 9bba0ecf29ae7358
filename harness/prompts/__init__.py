"""Prompt templates: one definition shared by evaluation and fine-tuning."""

from harness.prompts.templates import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    PromptTemplate,
    get_template,
    render_prompt,
)

__all__ = ["DEFAULT_TEMPLATE", "TEMPLATES", "PromptTemplate", "get_template", "render_prompt"]
