"""The CRDs' CEL validation rules (`x-kubernetes-validations`), evaluated on objects as the API server would.

CEL itself is cel-python. The Karpenter rules also call two Kubernetes extension functions that cel-python
lacks; they are implemented here from their definitions:
  - `<string>.find(<regex>) -> string`: the leftmost match of the RE2 regex, '' when there is none; an invalid
    regex is an error (k8s.io/apiserver pkg/cel/library/regex.go, the `kubernetes.regex` library). RE2 is
    google-re2, the engine cel-python itself uses for `matches`.
  - `<string>.split(<separator>) -> list<string>` and `.split(<separator>, <limit>)`: Go's strings.Split /
    strings.SplitN: limit 0 gives [], a negative limit splits everywhere, n > 0 gives at most n parts with the
    rest in the last; an empty separator splits between characters (google/cel-go ext/strings.go, the
    `cel.lib.ext.strings` library Kubernetes includes).

What `validate()` does as the API server does:
  - schema defaults are applied first (defaulting runs before validation);
  - a rule at a schema node is evaluated with `self` bound to each value the object has there: the node's own
    value, every item of an array (`items`), every value of a map (`additionalProperties`); nodes the object
    does not have are not evaluated;
  - a rule that is false fails with its `message` (or "failed rule: <rule>"); a rule that cannot be evaluated
    (a missing key, a bad regex) fails too, as the API server rejects the object then;
  - transition rules (those reading `oldSelf`) run only on an update, where the old object has a value that
    correlates with the new one: through object properties, map keys, and items of `listType: map` lists by
    their keys. Without an old object (a create: what `pulumi up` does first) they are skipped, and
    `Report.skipped` lists them.
Not modelled: `messageExpression`, `optionalOldSelf`, CEL cost limits, type-checking at CRD registration, and
format-typed strings as CEL timestamps/durations (no Karpenter rule reads one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable, Iterator, Mapping

import celpy
import re2
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

VALIDATIONS = "x-kubernetes-validations"


# --- the Kubernetes extension functions -------------------------------------------------------------------

def find(text: str, pattern: str) -> celtypes.StringType | CELEvalError:
    try:
        match = re2.search(str(pattern), str(text))
    except re2.error as error:
        return CELEvalError(f"Illegal regex: {error}", type(error), error.args)
    return celtypes.StringType(match.group(0) if match else "")


def split(text: str, separator: str, limit: int | None = None) -> celtypes.ListType:
    text, separator, n = str(text), str(separator), -1 if limit is None else int(limit)
    if n == 0:
        parts: list[str] = []
    elif separator == "":
        characters = list(text)
        parts = characters if n < 0 or n >= len(characters) else [*characters[:n - 1], "".join(characters[n - 1:])]
    else:
        parts = text.split(separator) if n < 0 else text.split(separator, n - 1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


FUNCTIONS: dict[str, Callable[..., Any]] = {"find": find, "split": split}


# --- rules ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    site: str        # the schema node, e.g. `spec.amiSelectorTerms[*].alias`
    expression: str
    message: str

    @property
    def transition(self) -> bool:
        return "oldSelf" in self.expression


def _rules_at(schema: Mapping[str, Any], site: str) -> list[Rule]:
    return [Rule(site, r["rule"], r.get("message") or f"failed rule: {r['rule']}")
            for r in schema.get(VALIDATIONS) or []]


def _children(schema: Mapping[str, Any], site: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    for name, sub in (schema.get("properties") or {}).items():
        yield sub, f"{site}.{name}" if site else name
    if isinstance(schema.get("items"), dict):
        yield schema["items"], f"{site}[*]"
    if isinstance(schema.get("additionalProperties"), dict):
        yield schema["additionalProperties"], f"{site}{{*}}"


def schema_rules(schema: Mapping[str, Any], site: str = "") -> list[Rule]:
    """Every rule of the schema, at every node `validate()` visits."""
    rules = _rules_at(schema, site)
    for sub, where in _children(schema, site):
        rules += schema_rules(sub, where)
    return rules


def count_validation_lists(value: Any) -> int:
    """Rules anywhere in a document, however nested: a check that `schema_rules()` misses none."""
    if isinstance(value, dict):
        return len(value.get(VALIDATIONS) or []) + sum(count_validation_lists(v) for k, v in value.items()
                                                       if k != VALIDATIONS)
    if isinstance(value, list):
        return sum(count_validation_lists(v) for v in value)
    return 0


# --- evaluation -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    rule: Rule
    path: str          # where in the object, e.g. `spec.amiSelectorTerms[0].alias`
    passed: bool
    error: str | None = None

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.rule.message}" + (f" (error: {self.error})" if self.error else "")


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    skipped: list[tuple[Rule, str]] = field(default_factory=list)  # transition rules without an old value

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.passed]

    def messages(self) -> list[str]:
        return [str(r) for r in self.failures]


@cache
def _compiled(expression: str) -> Any:
    return celpy.Environment().compile(expression)


def _evaluate(rule: Rule, value: Any, old: Any, has_old: bool, functions: Mapping[str, Callable[..., Any]],
              path: str) -> Result:
    activation = {"self": json_to_cel(value)}
    if has_old:
        activation["oldSelf"] = json_to_cel(old)
    try:
        program = celpy.Environment().program(_compiled(rule.expression), functions=dict(functions))
        outcome = program.evaluate(activation)
    except CELEvalError as error:
        return Result(rule, path, False, str(error.args[0] if error.args else error))
    if isinstance(outcome, CELEvalError):
        return Result(rule, path, False, str(outcome.args[0] if outcome.args else outcome))
    if not isinstance(outcome, celtypes.BoolType):
        return Result(rule, path, False, f"rule gave {outcome!r}, not a bool")
    return Result(rule, path, bool(outcome))


def with_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """A copy of `value` with the schema's defaults filled in, as the API server does before validating."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: Any, schema: Mapping[str, Any]) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        additional = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                _default(item, properties[name])
            elif isinstance(additional, dict):
                _default(item, additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])


def _walk(value: Any, schema: Mapping[str, Any], site: str, path: str, old: Any, has_old: bool,
          functions: Mapping[str, Callable[..., Any]], report: Report) -> None:
    for rule in _rules_at(schema, site):
        if rule.transition and not has_old:
            report.skipped.append((rule, path))
        else:
            report.results.append(_evaluate(rule, value, old, has_old, functions, path))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                sub, where = properties[name], f"{site}.{name}" if site else name
            elif isinstance(additional, dict):
                sub, where = additional, f"{site}{{*}}"
            else:
                continue  # pruned by the API server (tests.schemas.pruned_fields reports it)
            old_has = has_old and isinstance(old, dict) and name in old
            _walk(item, sub, where, f"{path}.{name}" if path else name, old[name] if old_has else None, old_has,
                  functions, report)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        for index, item in enumerate(value):
            old_item, old_has = None, False
            if keys and has_old and isinstance(old, list) and isinstance(item, dict):
                matches = [o for o in old if isinstance(o, dict) and all(o.get(k) == item.get(k) for k in keys)]
                if matches:
                    old_item, old_has = matches[0], True
            _walk(item, schema["items"], f"{site}[*]", f"{path}[{index}]", old_item, old_has, functions, report)


def validate(obj: Mapping[str, Any], schema: Mapping[str, Any], old: Mapping[str, Any] | None = None,
             functions: Mapping[str, Callable[..., Any]] = FUNCTIONS) -> Report:
    """Evaluate every rule of `schema` (an openAPIV3Schema) on `obj`; `old` for an update."""
    report = Report()
    _walk(with_defaults(obj, schema), schema, "", "", with_defaults(old, schema) if old is not None else None,
          old is not None, functions, report)
    return report
