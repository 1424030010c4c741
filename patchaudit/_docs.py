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


def rule_page(rule: Rule) -> str:
    """One Markdown page per rule; docs/rules/<CODE>.md is exactly this text."""
    refs = ", ".join(f"`{r}`" if not r.startswith("FM-") else r for r in rule.references)
    return f"""# {rule.code} {rule.name}

{rule.summary}.

- Category: `{rule.category.value}`
- Default severity: `{rule.severity.value}`
- Failure modes: {", ".join(rule.failure_modes) or "none"} (see the failure-mode catalogue)
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
