"""Prompt templates: training and evaluation text are byte-identical up to the answer."""

from __future__ import annotations

import pytest

from harness.benchmark.model import Question
from harness.errors import ModelBackendError
from harness.prompts import DEFAULT_TEMPLATE, TEMPLATES, PromptTemplate, get_template, render_prompt

CTX = "CREATE TABLE poi (id int, name text, attrs jsonb DEFAULT '{}');"
Q = Question(id="q7", question=" 杭州有多少个公园? ", golds=("SELECT count(*) FROM poi;",), context=CTX + "\n")


def test_default_is_the_seed_chinese_template_without_a_fence():
    t = get_template()
    assert t.name == DEFAULT_TEMPLATE == "seed-zh"
    text = t.render(Q.context, Q.question)
    assert text.startswith("你是一名PostgreSQL/PostGIS专家。")
    assert text.endswith("### 问题:\n杭州有多少个公园?\n\n### Answer:\n")
    assert "```" not in text
    assert "{}" in text  # braces in the schema survive substitution


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_training_example_extends_the_eval_prompt_exactly(name):
    t = get_template(name)
    prompt = t.render(Q.context, Q.question)
    example = t.format_training_example(Q.context, Q.question, " SELECT count(*) FROM poi; \n", eos="</s>")
    assert example.startswith(prompt)
    assert example[len(prompt):] == "SELECT count(*) FROM poi;" + t.answer_suffix + "</s>"


def test_sqlcoder_opens_the_fence_in_the_prompt_and_closes_it_in_the_target():
    t = get_template("sqlcoder")
    assert t.render("c", "q").endswith("```sql\n")
    assert t.format_training_example("c", "q", "SELECT 1;").endswith("SELECT 1;\n```")


def test_placeholders_in_the_question_are_not_substituted_twice():
    t = get_template()
    assert "{context}" in t.render("schema", "what is {context}?")


def test_render_prompt_completion_and_chat():
    p = render_prompt(Q, get_template())
    assert (p.id, p.template, p.messages) == ("q7", "seed-zh", ())
    assert p.text == get_template().render(Q.context, Q.question)
    c = render_prompt(Q, get_template("chat"))
    assert [role for role, _ in c.messages] == ["system", "user"]
    assert c.text == c.messages[-1][1] and "杭州有多少个公园?" in c.text and CTX in c.text
    assert c.identity() != p.identity()


def test_unknown_template_suggests_the_closest():
    with pytest.raises(ModelBackendError) as exc:
        get_template("sqlcodr")
    assert str(exc.value) == "Unknown prompt template 'sqlcodr'. Did you mean 'sqlcoder'? Available: chat, seed-zh, sqlcoder"


def test_template_needs_both_placeholders():
    with pytest.raises(ModelBackendError, match="no {question} placeholder"):
        PromptTemplate("bad", "schema: {context}")


def test_json_round_trip_and_loading_from_a_file(tmp_path):
    t = get_template("sqlcoder")
    path = tmp_path / "tmpl.json"
    t.save(path)
    assert PromptTemplate.load(path) == t
    assert get_template(str(path)) == t
    path.write_text('{"name": "x", "text": "{context}{question}", "colour": 1}')
    with pytest.raises(ModelBackendError, match="unknown fields"):
        PromptTemplate.load(path)
