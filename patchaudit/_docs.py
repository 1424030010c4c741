"""Rule documentation rendered from the catalogue: `patchaudit rules` and docs/rules/*.md."""

from __future__ import annotations

from typing import Any

from .rules._model import Rule

KB = "failure-modes.md"


def rule_as_dict(rule: Rule) -> dict[str, Any]:
    return {
        "code": rule.code,
        "name": rule.name,
        "category": rule.category.value,
        "severity": rule.severity.value,
        "summary": rule.summary,
        "why": rule.why,
        "fix": rule.fix,
        "bad": rule.bad,
        "good": rule.good,
        "references": list(rule.references),
        "docs": rule.docs_path,
    }


def _fm_link(code: str) -> str:
    """``FM-01`` as a link to its section of docs/failure-modes.md (rule pages sit one below)."""
    return f"[{code}](../{KB}#{code.lower()})"


def rule_page(rule: Rule) -> str:
    """One Markdown page per rule; docs/rules/<CODE>.md is exactly this text."""
    refs = ", ".join(_fm_link(r) if r.startswith("FM-") else f"`{r}`" for r in rule.references)
    modes = ", ".join(_fm_link(fm) for fm in rule.failure_modes) or "none"
    return f"""# {rule.code} {rule.name}

{rule.summary}.

- Category: `{rule.category.value}`
- Default severity: `{rule.severity.value}`
- Failure modes: {modes} (in the [failure-mode catalogue](../{KB}))
- References: {refs}

## Why this matters

{rule.why}

## How to fix

{rule.fix}

## Example

Flagged:

```python
{rule.bad}
```

Fixed:

```python
{rule.good}
```

Silence one occurrence with `# noqa: {rule.code}` on the reported line.
"""


def rules_table(rules: list[Rule], *, markdown: bool = False) -> str:
    if markdown:
        lines = ["| code | name | category | severity | summary |", "|---|---|---|---|---|"]
        for r in rules:
            lines.append(
                f"| [{r.code}](rules/{r.code}.md) | {r.name} | {r.category.value} | "
                f"{r.severity.value} | {r.summary} |"
            )
        return "\n".join(lines) + "\n"
    width = max(len(r.name) for r in rules)
    lines = [f"{r.code}  {r.name:<{width}}  {r.severity.value:<7}  {r.summary}" for r in rules]
    return "\n".join(lines) + "\n"


def write_docs(folder: str = "docs") -> list[str]:
    """Regenerate docs/rules/*.md and docs/rules.md (`python -m patchaudit._docs`)."""
    from pathlib import Path

    from .rules import all_rules

    rules_dir = Path(folder) / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rule in all_rules():
        path = rules_dir / f"{rule.code}.md"
        path.write_text(rule_page(rule), encoding="utf-8")
        written.append(str(path))
    for stale in rules_dir.glob("*.md"):
        if str(stale) not in written:
            stale.unlink()
    index = Path(folder) / "rules.md"
    index.write_text(rules_index(all_rules()), encoding="utf-8")
    return written + [str(index)]


def rules_index(rules: list[Rule]) -> str:
    return (
        "# Rules\n\n"
        "Generated from the catalogue by `python -m patchaudit._docs`; "
        "`patchaudit rules CODE` prints the same pages.\n\n" + rules_table(rules, markdown=True)
    )


if __name__ == "__main__":
    for written_path in write_docs():
        print(written_path)
