"""The fenced code blocks of docs/api.md, which tests run as written."""

from __future__ import annotations

from pathlib import Path

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def doc_blocks(heading: str, language: str) -> list[str]:
    """The fenced `language` blocks under docs/api.md's `## heading`, in order."""
    blocks: list[str] = []
    section, block = "", None
    for line in API_DOC.read_text().splitlines():
        if block is not None:
            if line.startswith("```"):
                blocks.append("\n".join(block) + "\n")
                block = None
            else:
                block.append(line)
        elif line.startswith("## "):
            section = line[3:].strip()
        elif section == heading and line == f"```{language}":
            block = []
    assert blocks, f"no {language} block under '## {heading}' in {API_DOC}"
    return blocks
