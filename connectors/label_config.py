"""The one reader of Label Studio label configs: which object tags (modalities) and which Choices controls.

The backend must work with any names: ``<Image name="photo" value="$img_url"/>`` and
``<Text name="caption" value="$desc"/>`` are as valid as ``image``/``text``. Each object tag whose
``value`` is a ``$data_key`` reference becomes one modality, named after the tag's ``name``; the first
``Choices`` control (or the one named in settings) gives the class names, in config order (a choice's
``alias``, when it has one, is what annotations store).

:func:`read_label_config` reads every object tag and Choices control; :func:`parse_label_config` adds what
the ML backend needs (a modality, a control with two choices). The export importer
(:func:`connectors.importers.choices_from_label_config`) and the server (``ml_server``) both read here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.data import DataError

# Label Studio object tags (the ones that display task data); matching is case-insensitive.
OBJECT_TAGS: dict[str, str] = {t.lower(): t for t in (
    "Image", "Text", "HyperText", "Audio", "AudioPlus", "Video", "TimeSeries", "Table", "Paragraphs",
    "Pdf", "Markdown", "List", "Ranker", "Chat", "Bitmask",
)}
_DATA_REF = re.compile(r"^\$([A-Za-z0-9_.\-]+)$")


class LabelConfigError(DataError):
    """The label config cannot drive this backend; the message names the tag or attribute."""


@dataclass(frozen=True)
class ObjectTag:
    """One object tag: ``name`` (the modality name), ``type`` (canonical tag type), ``data_key`` (task data key)."""

    name: str
    type: str
    data_key: str
    value_type: str | None = None  # e.g. Text valueType="url": the data holds a URL to the text

    @property
    def is_url_valued(self) -> bool:
        return self.type != "Text" or (self.value_type or "").lower() == "url"


@dataclass(frozen=True)
class ChoicesControl:
    """The classification control: ``name`` (from_name), ``to_name`` (first target), class names in order."""

    name: str
    to_name: str
    choices: tuple[str, ...]
    multiple: bool = False


@dataclass(frozen=True)
class LabelConfig:
    """What the backend needs from a label config."""

    objects: tuple[ObjectTag, ...]
    control: ChoicesControl
    ignored: tuple[str, ...] = field(default_factory=tuple)  # object tags without a $data reference

    @property
    def class_names(self) -> list[str]:
        return list(self.control.choices)

    @property
    def multi_label(self) -> bool:
        """``choice="multiple"``: a task's label is the set of classes chosen."""
        return self.control.multiple

    def choices_region(self, label: str | list[str]) -> dict:
        """The Label Studio ``choices`` result region for a class (or, multi-label, a list of classes)."""
        to_name = self.control.to_name or self.objects[0].name
        choices = list(label) if isinstance(label, (list, tuple)) else [label]
        return {"from_name": self.control.name, "to_name": to_name, "type": "choices", "value": {"choices": choices}}

    def object(self, name: str) -> ObjectTag:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise LabelConfigError(f"no object tag named {name!r}; the config has {[o.name for o in self.objects]}")


def predicted_labels(probs: Any, class_names: list[str], multi_label: bool) -> list[str | list[str]]:
    """Per item, the predicted class (argmax of (n, C) ``probs``) or, multi-label, the list of every class
    whose sigmoid is >= 1/2, in class order (possibly empty)."""
    p = probs.detach().float().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    if multi_label:
        return [[class_names[c] for c in np.flatnonzero(row >= 0.5)] for row in p]
    return [class_names[int(k)] for k in p.argmax(axis=1)]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_label_config(xml: str) -> tuple[list[ObjectTag], list[ChoicesControl], list[str]]:
    """Every object tag with a ``$data`` value, every Choices control (in config order) and the names of the
    object tags without one, from ``xml``.

    Raises LabelConfigError for malformed XML, a DOCTYPE (entity expansion is never needed), a tag or
    control without a name, duplicate names, dynamic choices, or choices without a value or repeated.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("label config is empty")
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        raise LabelConfigError("label config must not contain a DOCTYPE or ENTITY declaration")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label config is not well-formed XML: {exc}") from None

    objects: list[ObjectTag] = []
    ignored: list[str] = []
    controls: list[ChoicesControl] = []
    seen: set[str] = set()
    for el in root.iter():
        tag = _local(el.tag)
        canonical = OBJECT_TAGS.get(tag.lower())
        if canonical is not None:
            name = el.get("name")
            value = (el.get("value") or "").strip()
            if not name:
                raise LabelConfigError(f"<{tag}> object tag has no name attribute")
            m = _DATA_REF.match(value)
            if not m:
                ignored.append(name)  # static value, no task data behind it
                continue
            if name in seen:
                raise LabelConfigError(f"two tags are named {name!r}")
            seen.add(name)
            objects.append(ObjectTag(name, canonical, m.group(1), el.get("valueType")))
        elif tag.lower() == "choices":
            name = el.get("name")
            to_name = el.get("toName") or el.get("toname") or ""
            if not name:
                raise LabelConfigError("<Choices> control has no name attribute")
            if (el.get("value") or "").startswith("$"):
                raise LabelConfigError(f"Choices {name!r}: dynamic choices (value=\"$...\") are not supported")
            choices: list[str] = []
            for ch in el.iter():
                if _local(ch.tag).lower() != "choice":
                    continue
                val = ch.get("alias") or ch.get("value")
                if val is None or val == "":
                    raise LabelConfigError(f"Choices {name!r}: a <Choice> has no value")
                if val in choices:
                    raise LabelConfigError(f"Choices {name!r}: choice {val!r} appears twice")
                choices.append(val)
            controls.append(ChoicesControl(name, to_name.split(",")[0].strip(), tuple(choices),
                                           (el.get("choice") or "single").lower() == "multiple"))
    return objects, controls, ignored


def parse_label_config(xml: str, control_name: str | None = None) -> LabelConfig:
    """Parse ``xml`` into object tags and the Choices control (``choice="multiple"``: a multi-label project).

    Raises LabelConfigError for what :func:`read_label_config` refuses, and for no object tag with a
    ``$data`` value, no Choices control, or a control with fewer than two choices.
    """
    objects, controls, ignored = read_label_config(xml)
    if not objects:
        raise LabelConfigError("label config has no object tag (Image, Text, ...) with a $data value")
    if not controls:
        raise LabelConfigError("label config has no <Choices> control: this backend classifies tasks")
    if control_name is not None:
        matching = [c for c in controls if c.name == control_name]
        if not matching:
            raise LabelConfigError(f"no Choices control named {control_name!r}; have {[c.name for c in controls]}")
        control = matching[0]
    else:
        control = controls[0]
    if len(control.choices) < 2:
        raise LabelConfigError(f"Choices {control.name!r} needs at least 2 choices, has {len(control.choices)}")
    return LabelConfig(tuple(objects), control, tuple(ignored))
