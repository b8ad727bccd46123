"""Prompts for one step of a chain, and extraction of code from a reply.

Prompt text follows upstream SciCode: earlier steps (description, optionally
background, then that step's code), the next step with its function header and
return line, and the problem's dependencies, filled into a template.
"""
from __future__ import annotations

import ast
import re
from typing import Optional

# Upstream strips import lines from model output (dependencies are given).
_IMPORT_LINE = re.compile(r"^\s*(import .*|from .*\s+import\s+.*)", re.MULTILINE)
_NAME_IN_HEADER = (re.compile(r"\bdef\s+(\w+)\s*\("), re.compile(r"\bclass\s+(\w+)\s*\("))


def template_name(with_background: bool, prompt_template_type: Optional[str]) -> str:
    """Upstream's choice: with background -> multistep template, else the background-comment one."""
    if prompt_template_type:
        return prompt_template_type
    return "multistep_template.txt" if with_background else "background_comment_template.txt"


def _describe(step: dict, with_background: bool) -> str:
    text = step["step_description_prompt"]
    if with_background:
        text += "\n" + step.get("step_background", "")
    return text


def build_prompt(problem: dict, index: int, previous_code: list[str], template: str,
                 with_background: bool) -> str:
    """Prompt for step `index` (0-based) given the chain's code for steps 0..index-1."""
    steps = problem["sub_steps"]
    parts: list[str] = []
    for i in range(index):
        parts += [_describe(steps[i], with_background), previous_code[i], "------"]
    step = steps[index]
    next_step = "\n\n".join([_describe(step, with_background),
                             f"{step['function_header']}\n\n{step['return_line']}"])
    return template.format(problem_steps_str="\n\n".join(parts[:-1]),
                           next_step_str=next_step,
                           dependencies=problem["required_dependencies"])


def split_reasoning(text: str, end_token: Optional[str] = "</think>") -> "tuple[str, bool]":
    """(answer part, reasoning never ended). The answer is everything after the last
    ``end_token``; a reply that opens reasoning (``<think>`` for ``</think>``) and never
    closes it has no answer. An empty ``end_token`` disables stripping."""
    text = text or ""
    if not end_token:
        return text, False
    if end_token in text:
        return text.rsplit(end_token, 1)[1], False
    opening = "<" + end_token[2:] if end_token.startswith("</") else None
    if opening and opening in text:
        return "", True
    return text, False


def extract_code(reply: str, regex: Optional[str] = None) -> str:
    """Code from a reply: upstream's rule (first ```python block, else first fenced
    block, else the whole text), or the first match of `regex`; import lines removed."""
    reply = reply or ""
    if regex is not None:
        m = re.search(regex, reply, re.DOTALL)
        code = m.group(0) if m else ""
    elif "```python" in reply:
        code = reply.split("```python", 1)[1].split("```", 1)[0]
    elif "```" in reply:
        code = reply.split("```")[1]
    else:
        code = reply
    return _IMPORT_LINE.sub("", code)


def header_name(function_header: str) -> Optional[str]:
    for pat in _NAME_IN_HEADER:
        m = pat.search(function_header)
        if m:
            return m.group(1)
    return None


def extract_named(code: str, name: Optional[str]) -> str:
    """Upstream's previous-step extraction: the first def/class called `name`
    (reproduces its class-truncation behaviour when `name` is a method)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.unparse(node)
    return code


def prefill(step: dict, text: str, mode: str) -> str:
    """Code used for a never-asked step: the whole file (verbatim) or upstream's extraction."""
    if mode == "verbatim":
        return text
    # upstream's header regex tries `def` first, so `class X:` resolves to its __init__
    return extract_named(text, header_name(step["function_header"]))
