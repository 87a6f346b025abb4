"""The Export page for an OFA subnet, through Streamlit's AppTest.

A subnet of the bundled MobileNetV2 supernet is used on the OFA Pareto page ("Use this
subnet"), then the Export page offers its subnet_setting (not a spec) and says how it rebuilds;
the downloaded setting + state dict rebuild the static subnet with the same outputs, and the
reports carry the setting (the HTML one the search's plot).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
import torch
from apptest_pages import assert_no_errors as _no_errors
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.torch.ofa import OFAPruner, get_static_subnet, load_subnet_config
from uif_explorer.torch.ofa.bundled import supernet_path
from uif_explorer.ui import workspace

APP = "../../app.py"
TIMEOUT = 180
TOKEN = "ofa-export-token-" + "d" * 15
SAMPLE = "mobilenetv2_small"
REF = f"bundled:{SAMPLE}"
PICKS = f"ofa_picks_{REF}"
NET = "net_min"
REBUILD = ("Rebuilds from the original architecture + `ofa_model(**ofa_args)` + "
           "`get_static_subnet(subnet_setting)` + the state dict.")

pytestmark = pytest.mark.skipif(not supernet_path(SAMPLE).exists(),
                                reason="the bundled supernet is not trained")


def _bytes(offer: dict[str, Any]) -> bytes:
    data = offer["data"]
    data = data() if isinstance(data, Callable) else data
    return data.encode() if isinstance(data, str) else bytes(data)


def test_export_of_an_ofa_subnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 downloads: dict[str, dict[str, Any]]) -> None:
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path / "ws"))
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["ws"] = TOKEN
    at.run()
    at.session_state["ofa_supernet"] = REF
    at.switch_page("pages/ofa.py").run()
    at.multiselect(key=PICKS).set_value([NET]).run()
    at.selectbox(key="ofa_use_pick").set_value(NET)
    at.selectbox(key="ofa_use_images").set_value(64)
    at.button(key="ofa_use").click().run()
    _no_errors(at)
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.kind == "ofa_subnet"
    subnet = pruned.model

    downloads.clear()
    at.switch_page("pages/export.py").run()
    _no_errors(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Subnet setting (.json)" in labels and "Spec (.json)" not in labels
    assert downloads["Subnet setting (.json)"]["file_name"] == f"{SAMPLE}_ofa_subnet.json"
    captions = "\n".join(c.value for c in at.caption)
    assert REBUILD in captions
    assert "the spec + the slim state dict" not in captions

    # the setting file loads as a subnet config; with the state dict it rebuilds the subnet
    setting_path = tmp_path / f"{SAMPLE}_ofa_subnet.json"
    setting_path.write_bytes(_bytes(downloads["Subnet setting (.json)"]))
    entry = load_subnet_config(setting_path)
    assert entry["net_id"] == NET and entry["subnet_setting"] == pruned.subnet_setting
    from safetensors.torch import load

    offer = downloads["Slim state dict (.safetensors)"]
    assert offer["file_name"] == f"{SAMPLE}_ofa_subnet.safetensors"
    state = load(_bytes(offer))
    ofa = OFAPruner(zoo.build_torch(SAMPLE), zoo.example_input(SAMPLE)).ofa_model(
        **entry["ofa_args"])
    rebuilt = get_static_subnet(ofa, entry)[0]
    rebuilt.load_state_dict(state, strict=True)
    rebuilt.eval()
    x = torch.randn(4, *zoo.example_input(SAMPLE).shape[1:], generator=torch.Generator()
                    .manual_seed(0))
    with torch.no_grad():
        want, got = subnet.eval()(x), rebuilt(x)
    assert (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)) < 1e-5

    # the reports carry the setting; the HTML one the search the subnet came from
    report = json.loads(_bytes(downloads["Report (.json)"]))
    assert report["subnet_setting"] == pruned.subnet_setting
    assert report["ofa_args"] == entry["ofa_args"]
    rows = list(csv.DictReader(io.StringIO(_bytes(downloads["Report (.csv)"]).decode())))
    in_csv = [json.loads(r["subnet_setting"]) for r in rows if r["subnet_setting"]]
    assert sorted(json.dumps(e) for es in in_csv for e in es) == sorted(
        json.dumps(e) for e in pruned.subnet_setting)
    html = _bytes(downloads["Report with charts (.html)"]).decode()
    assert "evaluated subnets" in html and "Pareto front" in html and "subnet_setting" in html
