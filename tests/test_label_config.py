"""Label config parsing: any tag names and data keys, the Choices control, clear errors."""

from __future__ import annotations

import pytest

from connectors.label_config import LabelConfigError, parse_label_config
from ml_server.dataset import modality_specs
from ml_server.settings import DEFAULT_FEATURIZERS

CAPTURED = """<View>
  <Image name="image" value="$image"/>
  <Text name="text" value="$text"/>
  <Choices name="label" toName="text" choice="single">
    <Choice value="a"/><Choice value="b"/><Choice value="c"/>
  </Choices>
</View>"""


def test_captured_config():
    cfg = parse_label_config(CAPTURED)
    assert [(o.name, o.type, o.data_key) for o in cfg.objects] == [("image", "Image", "image"), ("text", "Text", "text")]
    assert cfg.control.name == "label" and cfg.control.to_name == "text"
    assert cfg.class_names == ["a", "b", "c"] and not cfg.control.multiple


def test_other_names_nesting_and_aliases():
    xml = """<View>
      <Header value="Classify"/>
      <View style="display:flex">
        <Image name="photo" value="$img_url" zoom="true"/>
        <HyperText name="page" value="$html"/>
        <Text name="note" value="static text, not data"/>
      </View>
      <Choices name="category" toName="photo,page" choice="multiple" showInline="true">
        <View><Choice value="Cat" alias="cat"/></View>
        <Choice value="Dog"/>
        <Choice value="Other"/>
      </Choices>
    </View>"""
    cfg = parse_label_config(xml)
    assert [(o.name, o.type, o.data_key) for o in cfg.objects] == [("photo", "Image", "img_url"),
                                                                  ("page", "HyperText", "html")]
    assert cfg.ignored == ("note",)
    assert cfg.control.name == "category" and cfg.control.to_name == "photo"
    assert cfg.class_names == ["cat", "Dog", "Other"] and cfg.control.multiple and cfg.multi_label


def test_case_insensitive_tags_and_url_text():
    xml = """<view><image name="i" value="$pic"/><text name="t" value="$u" valueType="url"/>
             <choices name="c" toName="i"><choice value="x"/><choice value="y"/></choices></view>"""
    cfg = parse_label_config(xml)
    assert cfg.object("t").value_type == "url" and cfg.object("i").type == "Image"


def test_first_choices_or_named_control():
    xml = """<View><Image name="a" value="$a"/><Text name="b" value="$b"/>
      <Choices name="quality" toName="a"><Choice value="good"/><Choice value="bad"/></Choices>
      <Choices name="topic" toName="b"><Choice value="x"/><Choice value="y"/><Choice value="z"/></Choices></View>"""
    assert parse_label_config(xml).control.name == "quality"
    assert parse_label_config(xml, control_name="topic").class_names == ["x", "y", "z"]
    with pytest.raises(LabelConfigError, match="no Choices control named 'nope'"):
        parse_label_config(xml, control_name="nope")


@pytest.mark.parametrize("xml, message", [
    ("", "empty"),
    ("<View><Image name='i' value='$i'/>", "not well-formed"),
    ("<View><Image name='i' value='$i'/><Text name='t' value='$t'/></View>", "no <Choices>"),
    ("<View><Choices name='c' toName='x'><Choice value='a'/><Choice value='b'/></Choices></View>", "no object tag"),
    ("<View><Image name='i' value='$i'/><Choices name='c' toName='i'><Choice value='a'/></Choices></View>",
     "at least 2 choices"),
    ("<View><Image name='i' value='$i'/><Choices name='c' toName='i'><Choice value='a'/><Choice value='a'/>"
     "</Choices></View>", "appears twice"),
    ("<View><Image name='i' value='$i'/><Image name='i' value='$j'/><Choices name='c' toName='i'>"
     "<Choice value='a'/><Choice value='b'/></Choices></View>", "two tags are named 'i'"),
    ("<View><Image value='$i'/></View>", "no name"),
    ("<View><Image name='i' value='$i'/><Choices name='c' toName='i' value='$opts'/></View>", "dynamic choices"),
    ("<!DOCTYPE x [<!ENTITY a 'b'>]><View/>", "DOCTYPE"),
])
def test_bad_configs_name_the_problem(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


def test_modalities_need_featurizers_for_two_tags():
    xml = """<View><Image name="i" value="$i"/><Audio name="a" value="$a"/>
      <Choices name="c" toName="i"><Choice value="x"/><Choice value="y"/></Choices></View>"""
    cfg = parse_label_config(xml)
    with pytest.raises(LabelConfigError, match=r"at least 2 object tags.*a \(Audio\)"):
        modality_specs(cfg, DEFAULT_FEATURIZERS, {})
    specs = modality_specs(cfg, {**DEFAULT_FEATURIZERS, "Audio": "text_tokens"}, {"image_pixels": {"size": 8}})
    assert [(s.name, s.featurizer, s.params) for s in specs] == [("i", DEFAULT_FEATURIZERS["Image"], {}),
                                                                ("a", "text_tokens", {})]
    specs = modality_specs(cfg, {"Image": "image_pixels", "Audio": "text_tokens"}, {"image_pixels": {"size": 8}})
    assert [(s.name, s.featurizer, s.params) for s in specs] == [("i", "image_pixels", {"size": 8}),
                                                                ("a", "text_tokens", {})]
