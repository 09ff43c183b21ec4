#!/usr/bin/env python3
"""Validates OCSF Detection Finding events (class 2004), one JSON object per line.

    scripts/ocsf_validate.py FILE      # or `-`, or no argument: standard input

Each line must:

- be a JSON object, with no `null` anywhere in it (OCSF validators reject nulls: an
  absent value is an absent member);
- validate against `DetectionFinding` of py-ocsf-models (pydantic v2), in strict mode:
  `"20"` is not an integer and `1.0` not a time;
- use only members the model declares, at every depth. Pydantic ignores unknown keys by
  default (py-ocsf-models does not forbid them), so a misspelt member would otherwise
  pass; free-form members (`unmapped`, `data`) are not looked into;
- have `class_uid` 2004, `category_uid` 2, `type_uid` = `class_uid` * 100 + `activity_id`,
  and `metadata.version` the OCSF version the model targets.

Prints `N lines valid` and exits 0; otherwise prints each problem as `line N: ...` on
standard error and exits 1 (also for an empty input: there was nothing to check). Exits 2
when py-ocsf-models (or pydantic v2) is not installed.
"""

import json
import sys
import types
import typing

INSTALL = "python3 -m pip install 'py-ocsf-models==0.10.0'"

try:
    import pydantic
    import py_ocsf_models
    from py_ocsf_models.events.findings.detection_finding import DetectionFinding
except ImportError as e:  # the environment's problem, not the input's
    print(f"ocsf_validate: py-ocsf-models is not installed ({e}); install it: {INSTALL}", file=sys.stderr)
    sys.exit(2)

if not pydantic.VERSION.startswith("2."):
    print(f"ocsf_validate: pydantic {pydantic.VERSION} found, py-ocsf-models 0.10 needs v2: {INSTALL}", file=sys.stderr)
    sys.exit(2)

CLASS_UID = 2004
CATEGORY_UID = 2


def nulls(value, path="$"):
    """Paths of the nulls in a JSON value."""
    if value is None:
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from nulls(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from nulls(v, f"{path}[{i}]")


def model_of(annotation):
    """The pydantic model an annotation holds (through Optional and lists), and whether it
    is a list of them; None for scalars and free-form members."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                found = model_of(arg)
                if found:
                    return found
        return None
    if origin is list:
        (item,) = typing.get_args(annotation) or (None,)
        found = model_of(item)
        return (found[0], True) if found and not found[1] else None
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return (annotation, False)
    return None


def unknown_members(model, value, path="$"):
    """Paths of the members of `value` that `model` (and the models it nests) does not
    declare."""
    fields = model.model_fields
    for key, item in value.items():
        where = f"{path}.{key}"
        field = fields.get(key)
        if field is None:
            yield where
            continue
        found = model_of(field.annotation)
        if not found:
            continue
        inner, is_list = found
        if is_list and isinstance(item, list):
            for i, element in enumerate(item):
                if isinstance(element, dict):
                    yield from unknown_members(inner, element, f"{where}[{i}]")
        elif not is_list and isinstance(item, dict):
            yield from unknown_members(inner, item, where)


def reject_constant(name):
    """`NaN` and `Infinity`, which Python's json accepts and JSON does not."""
    raise ValueError(f"{name} is not JSON")


def short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def problems(line):
    """What is wrong with one line, as messages (none when it is valid)."""
    try:
        event = json.loads(line, parse_constant=reject_constant)
    except ValueError as e:
        return [f"not JSON: {e}"]
    if not isinstance(event, dict):
        return [f"not a JSON object but {type(event).__name__}"]
    found = [f"{p} is null" for p in nulls(event)]
    try:
        DetectionFinding.model_validate_json(line, strict=True)
    except pydantic.ValidationError as e:
        for err in e.errors():
            loc = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            found.append(f"{loc}: {err['msg']} (got {short(err.get('input'))})")
    found += [f"{p} is not a member of the model" for p in unknown_members(DetectionFinding, event)]
    if event.get("class_uid") != CLASS_UID:
        found.append(f"$.class_uid is {event.get('class_uid')!r}, not {CLASS_UID}")
    if event.get("category_uid") != CATEGORY_UID:
        found.append(f"$.category_uid is {event.get('category_uid')!r}, not {CATEGORY_UID}")
    activity, type_uid = event.get("activity_id"), event.get("type_uid")
    if isinstance(activity, int) and type_uid != CLASS_UID * 100 + activity:
        found.append(f"$.type_uid is {type_uid!r}, not class_uid * 100 + activity_id = {CLASS_UID * 100 + activity}")
    metadata = event.get("metadata")
    version = metadata.get("version") if isinstance(metadata, dict) else None
    if version != py_ocsf_models.OCSF_VERSION:
        found.append(f"$.metadata.version is {version!r}, not {py_ocsf_models.OCSF_VERSION!r} (the model's OCSF version)")
    return found


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    source = argv[1] if len(argv) == 2 else "-"
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"ocsf_validate: {source}: {e}", file=sys.stderr)
        return 2
    lines = text.splitlines()
    if not lines:
        print(f"ocsf_validate: {source}: no lines to validate", file=sys.stderr)
        return 1
    invalid = 0
    for number, line in enumerate(lines, start=1):
        found = problems(line) if line.strip() else ["empty line"]
        if found:
            invalid += 1
            for message in found:
                print(f"line {number}: {message}", file=sys.stderr)
    if invalid:
        print(f"{invalid} of {len(lines)} lines invalid", file=sys.stderr)
        return 1
    print(f"{len(lines)} lines valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
