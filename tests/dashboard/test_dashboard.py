"""Dashboards: sae-dashboard's HTML for a RouteSAE renders offline in headless Chromium, with the routing
panel; its activations are forward_routed's; it opens on the most active latent, names the dead ones and shows
line breaks as ↵; the Neuronpedia export keeps sae-dashboard's keys plus routing."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
from chromium_page import render
from helpers import tiny_hf_llama_folder

from sae_lens_routing import RouteSAE, RouteSAEConfig
from sae_lens_routing.dashboard.report import (
    RoutedModelView,
    dashboard_data,
    display_tokens,
    neuronpedia_batch,
    parse_features,
    routed_dashboard,
    screenshot,
    write_dashboard_html,
)

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
NEWLINE_ID = 7  # renamed to byte-level BPE's line break "Ċ" in the tiny tokenizer
POUND_ID = 9  # renamed to byte-level BPE's piece for "£", "Â£"
SPLIT_IDS = (10, 11)  # "£" as two byte-level tokens, "Â" (byte C2) then "£" (byte A3)
DEAD = list(range(10))  # latents made dead in the `dead_sae` fixture


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sae_lens_routing.offline.local_model import load_local_model

    root = tmp_path_factory.mktemp("dash")
    folder = tiny_hf_llama_folder(root / "model")
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["\u010a"] = vocab.pop(next(w for w, i in vocab.items() if i == NEWLINE_ID))
    vocab["\u00c2\u00a3"] = vocab.pop(next(w for w, i in vocab.items() if i == POUND_ID))
    for piece, piece_id in zip(("\u00c2", "\u00a3"), SPLIT_IDS):
        vocab[piece] = vocab.pop(next(w for w, i in vocab.items() if i == piece_id))
    tokenizer["decoder"] = {
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    model = load_local_model(folder)
    with torch.no_grad():
        model.W_U.mul_(50)  # near-zero logits of a random model make the histogram code emit huge tick lists
        model.ln_final.w.copy_(
            torch.linspace(-2.0, 3.0, 32)
        )  # an unfolded final-norm gain, as in real models
    torch.manual_seed(0)
    sae = RouteSAE(
        RouteSAEConfig(d_in=32, d_sae=64, k=8, hook_names=HOOKS, rescale_acts_by_decoder_norm=True)
    )
    tokens = torch.randint(3, 300, (32, 24), generator=torch.Generator().manual_seed(0))
    tokens[:, 8] = NEWLINE_ID  # in every top example's window that starts at or before position 8
    tokens[:, 9] = POUND_ID
    tokens[:, 10:12] = torch.tensor(SPLIT_IDS)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = routed_dashboard(sae, model, tokens, "0-5", root / "report.html")
    assert data.dead_latents == []  # every requested latent fired, so all six are shown
    return root, model, sae, tokens, SimpleNamespace(data=data, params_before=before)


@pytest.fixture(scope="module")
def dead_sae(setup):
    """The setup's SAE with latents 0-9 never in any token's top k."""
    _, _, sae, _, _ = setup
    dead = RouteSAE(sae.cfg)
    dead.load_state_dict(sae.state_dict())
    with torch.no_grad():
        dead.b_enc[DEAD] = -1e4
    return dead


def page_data(html_path):
    """(sae-dashboard's data object, its start key, our routing-panel data) as written into the page."""
    html = html_path.read_text()
    data = json.loads(re.search(r"function defineData\(\) \{.*?return (\{.*?\});\n\}", html, re.S).group(1))
    start = json.loads(re.search(r"const START_KEY = (\"[^\"]*\");", html).group(1))
    panel = json.loads(re.search(r"id='routing-panel-data'>(.*?)</script>", html, re.S).group(1))
    return data["DASHBOARD_DATA"], start, panel


def showable_firing(model, sae, tokens):
    """Independently: per latent, (tokens where it is > 0, max) over the positions sae-dashboard can show."""
    acts = routed(model, sae, tokens).feature_acts[:, 6:-5].reshape(-1, sae.cfg.d_sae)
    return (acts > 0).sum(0), acts.clamp_min(0).max(0).values


def routed(model, sae, tokens):
    _, cache = model.run_with_cache(tokens, names_filter=HOOKS)
    return sae.forward_routed(torch.stack([cache[h] for h in HOOKS], dim=-2))


def assert_page_shows_forward_routed(vis_data, tokens, feature_acts):
    """Every sequence the page shows (top group and quantile groups) is the window [p-5, p+5] around its
    example token p, with exactly forward_routed's activations."""
    for feature, data in vis_data.feature_data_dict.items():
        groups = data.sequence_data.seq_group_data
        shown_max = float(groups[0].title.split("MAX = ")[1].split()[0])
        assert abs(shown_max - feature_acts[..., feature].max().item()) < 1e-3, feature
        n_shown = 0
        for group in groups:
            for seq in group.seq_data:
                row, pos = seq.original_index, seq.qualifying_token_index
                assert seq.token_ids == tokens[row, pos - 5 : pos + 6].tolist()
                expected = feature_acts[row, pos - 5 : pos + 6, feature]
                torch.testing.assert_close(torch.tensor(seq.feat_acts), expected, atol=1e-4, rtol=1e-4)
                n_shown += 1
        assert n_shown >= 20 and any(a > 0 for a in groups[0].seq_data[0].feat_acts)


def test_dashboard_activations_equal_forward_routed(setup):
    _, model, sae, tokens, result = setup
    assert sorted(result.data.vis_data.feature_data_dict) == [0, 1, 2, 3, 4, 5]
    assert_page_shows_forward_routed(result.data.vis_data, tokens, routed(model, sae, tokens).feature_acts)
    assert not hasattr(model.blocks[2], "hook_resid_routed")  # the pseudo hook point was removed again
    assert "blocks.2.hook_resid_routed" not in model.hook_dict


def test_logit_effects_use_the_final_norm_gain(setup):
    """The logit tables are the unit decoder row times ln_final's gain, through W_U (what a fold_ln=True model
    would give), and the model's parameters are left exactly as they were."""
    _, model, sae, _, result = setup
    unit_rows = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
    for feature, data in result.data.vis_data.feature_data_dict.items():
        expected = (unit_rows[feature] * model.ln_final.w) @ model.W_U
        top = expected.topk(10)
        table = data.logits_table_data
        assert table.top_token_ids[:10] == top.indices.tolist()
        assert table.top_logits[:10] == pytest.approx(top.values.tolist(), rel=1e-3, abs=1e-3)
        unfolded = (unit_rows[feature] @ model.W_U).topk(10).indices.tolist()
        assert unfolded != table.top_token_ids[:10]  # the gain matters here, so this test can fail
    for name, param in model.named_parameters():
        assert torch.equal(param, result.params_before[name]), name


def test_unit_norm_decoder_without_rescaling(setup, tmp_path):
    """The other fold_W_dec_norm case (official checkpoints: unit-norm decoder rows, no rescaling or ReLU)."""
    _, model, _, tokens, _ = setup
    torch.manual_seed(1)
    sae = RouteSAE(RouteSAEConfig(d_in=32, d_sae=64, k=8, hook_names=HOOKS, topk_relu=False))
    with torch.no_grad():
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
    result = routed_dashboard(sae, model, tokens, [3, 7], tmp_path / "unit.html")
    assert_page_shows_forward_routed(result.vis_data, tokens, routed(model, sae, tokens).feature_acts)
    with torch.no_grad():
        sae.W_dec.mul_(2.0)
    with pytest.raises(ValueError, match="not unit-norm"):
        routed_dashboard(sae, model, tokens, [3], tmp_path / "bad.html")


def test_routed_view_stacks_the_routed_layers_and_leaves_the_model_alone(setup):
    """sae-dashboard's hook point is the routed layers stacked; its W_U has ln_final's gain folded in."""
    _, model, _, tokens, _ = setup
    view, got = RoutedModelView(model, HOOKS), {}
    view.run_with_hooks(tokens[:2], stop_at_layer=3, fwd_hooks=[(view.hook_name, lambda a, hook: got.update(
        act=a, hook=hook))])  # fmt: skip
    _, cache = model.run_with_cache(tokens[:2], names_filter=HOOKS)
    assert view.hook_name == "blocks.2.hook_resid_routed" and got["hook"] is view.hook_dict[view.hook_name]
    torch.testing.assert_close(got["act"], torch.cat([cache[h] for h in HOOKS], dim=-1))
    torch.testing.assert_close(view.W_U, model.ln_final.w[:, None] * model.W_U)
    assert view.hook_name not in model.hook_dict and view.tokenizer is model.tokenizer


@pytest.mark.browser
def test_dashboard_renders_offline_in_chromium(setup):
    root, *_, result = setup
    order = [str(f) for f in result.data.features]
    html = (root / "report.html").read_text()
    assert '<script src="http' not in html  # d3 and plotly are inlined, nothing is loaded from a CDN
    rendered = render(root / "report.html")
    assert rendered.console_errors == []
    dom = rendered.dom
    assert '<select id="select-0">' in dom and dom.count("<option") == 6  # the feature selector
    # its options are in the page's order (most active first), and it opens on the first
    assert re.findall(r'<option value="(\d+)"', dom) == order
    assert re.search(r'<option value="(\d+)" selected', dom).group(1) == order[0]
    assert 'class="token' in dom  # top-activation tokens were drawn
    assert '<span class="token"' in dom and ">\u21b5</span>" in dom  # a line break, drawn as ↵
    assert ">\u00a3</span>" in dom and "\u00c2\u00a3" not in dom  # the piece "Â£" drawn as "£" (a lone
    # half character at a window's edge, "Â", stays: it is no text)
    assert "share of top activations" in dom and "blocks.0.hook_resid_post" in dom  # the routing panel
    # choosing another feature in sae-dashboard's selector re-renders the routing panel for it
    choose = """(async () => {
        const select = document.querySelector('#dropdown-container select');
        select.value = select.options[3].value;
        select.dispatchEvent(new Event('change', {bubbles: true}));
        await new Promise(r => setTimeout(r, 200));
        return [select.value, document.getElementById('routing-panel-body').innerText];
    })()"""
    chosen = render(root / "report.html", script=choose)
    assert chosen.console_errors == []
    value, panel = chosen.script_result
    assert (
        value == order[3] and panel.startswith(f"Feature {order[3]}:") and "blocks.2.hook_resid_post" in panel
    )
    # at 1400 px (a laptop) every column of the page is on screen: none is cut off at the right
    columns = "JSON.stringify(Array.from(document.querySelectorAll('.grid-column'))"
    columns += ".map(c => c.getBoundingClientRect().right))"
    rights = json.loads(render(root / "report.html", width=1400, script=columns).script_result)
    assert len(rights) >= 4 and max(rights) <= 1400, rights
    png = screenshot(root / "report.html", root / "report.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


def test_routing_panel_describes_the_top_examples_shown(setup):
    """top_activation_share counts the routed layers of exactly the page's top-group examples (activation
    > 0); the mean activation per layer is over every active token routed there."""
    _, model, sae, tokens, result = setup
    out = routed(model, sae, tokens)
    for feature, stats in result.data.routing.items():
        top = result.data.vis_data.feature_data_dict[feature].sequence_data.seq_group_data[0].seq_data
        layers = [
            int(out.layer_index[s.original_index, s.qualifying_token_index])
            for s in top
            if out.feature_acts[s.original_index, s.qualifying_token_index, feature] > 0
        ]
        assert stats["n_top_activations"] == len(layers) > 0
        assert stats["top_activation_share"] == pytest.approx(
            [layers.count(i) / len(layers) for i in range(3)], abs=1e-4
        )
        acts = out.feature_acts[..., feature]
        for i in range(3):
            here = acts[(out.layer_index == i) & (acts > 0)]
            assert stats["active_tokens_per_layer"][i] == len(here)
            expected = here.mean().item() if len(here) else 0.0
            assert stats["mean_activation"][i] == pytest.approx(expected, abs=1e-3)
        assert stats["n_active_tokens"] == int((acts > 0).sum())


def test_neuronpedia_json_keeps_dashboard_keys(setup):
    from sae_dashboard.neuronpedia.neuronpedia_converter import NeuronpediaConverter
    from sae_dashboard.neuronpedia.neuronpedia_runner_config import NeuronpediaRunnerConfig

    from sae_lens_routing.dashboard.report import vocab_dict

    root, model, sae, _, result = setup
    ours = neuronpedia_batch(result.data)
    np_cfg = NeuronpediaRunnerConfig(sae_set="x", sae_path="", outputs_dir="", model_id="m", layer=2)
    theirs = json.loads(
        NeuronpediaConverter.convert_to_np_json(model, result.data.vis_data, np_cfg, vocab_dict(model))
    )
    assert (
        set(ours) - set(theirs) == {"routed_hook_names", "dead_latents"}
        and ours["routed_hook_names"] == HOOKS
    )
    assert ours["dead_latents"] == [] and ours["model_id"] == str(sae.cfg.metadata.model_name)
    assert len(ours["features"]) == len(theirs["features"]) == 6
    assert any("\u00c2" in a["tokens"] for f in theirs["features"] for a in f["activations"])
    for mine, stock in zip(ours["features"], theirs["features"], strict=True):
        assert set(mine) - set(stock) == {"routing"}
        for activation in stock["activations"]:  # per token, "£" split over two tokens shows as "Â£"
            toks = activation["tokens"]
            activation["tokens"] = ["" if t == "\u00c2" and toks[i + 1 : i + 2] == ["\u00a3"] else t
                                    for i, t in enumerate(toks)]
        assert {k: mine[k] for k in stock} == stock  # sae-dashboard's own fields, untouched
        assert stock["activations"] and {"tokens", "values", "bin_max"} <= set(stock["activations"][0])
        routing = mine["routing"]
        assert set(routing) == {
            "hook_names",
            "top_activation_share",
            "n_top_activations",
            "mean_activation",
            "active_tokens_per_layer",
            "n_active_tokens",
        }
        stats = result.data.routing[mine["feature_index"]]
        assert (
            routing["top_activation_share"] == stats["top_activation_share"]
            and len(stats["top_activation_share"]) == 3
        )
        assert routing["hook_names"] == HOOKS


def test_bad_inputs_fail_clearly(setup, tmp_path):
    _, model, sae, tokens, _ = setup
    assert parse_features("0-3,7", 10) == ([0, 1, 2, 3, 7], None)
    assert parse_features("top:4", 10) == (list(range(10)), 4)
    for spec in ["5-12", "top:0", "top:11", "top:x"]:
        with pytest.raises(ValueError, match="d_sae=10"):
            parse_features(spec, 10)
    cases = [
        (tokens.float(), "integer tensor"),
        (tokens[0], "integer tensor"),
        (tokens[:, :11], "seq_len > 11"),
        (tokens[:1, :12], "n_sequences"),
        (tokens + 10_000, "d_vocab"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            routed_dashboard(sae, model, bad, "0", tmp_path / "x.html")
    with pytest.raises(ValueError, match="RouteSAE"):
        routed_dashboard(torch.nn.Linear(2, 2), model, tokens, "0", tmp_path / "x.html")
    dead = RouteSAE(sae.cfg)
    dead.load_state_dict(sae.state_dict())
    with torch.no_grad():
        dead.b_enc[3] = -1e4
    with pytest.raises(ValueError, match="none of features '3' fired on these tokens"):
        dashboard_data(dead, model, tokens, "3")


@pytest.mark.browser
def test_browser_check_catches_js_errors(tmp_path):
    """Uncaught exceptions, console.error and any attempt to reach the network are all reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><script>console.error('logged-problem');</script>"
        "<img src='https://example.com/x.png'><script>undefinedFunction();</script><p>x</p></body></html>"
    )
    errors = render(page).console_errors
    assert any("undefinedFunction" in e for e in errors)
    assert any("logged-problem" in e for e in errors)
    assert any("example.com" in e for e in errors)  # networking is unavailable to the page
    clean = tmp_path / "clean.html"
    clean.write_text("<html><body><script>console.log('fine')</script><p id='ok'>x</p></body></html>")
    rendered = render(clean)
    assert rendered.console_errors == [] and '<p id="ok">x</p>' in rendered.dom


def test_top_n_opens_on_the_most_active_latent_and_lists_the_dead(setup, dead_sae, tmp_path):
    """top:N shows N live latents: those active on enough showable positions to fill the 20 top-activation
    rows first, then by largest activation (ties: firing more often); the page and the Neuronpedia JSON open
    on a full one, say what was requested and found, and name the dead ones. No top row shows activation 0,
    and no latent is among its own correlated features."""
    _, model, _, tokens, _ = setup
    spiky = RouteSAE(dead_sae.cfg)
    spiky.load_state_dict(dead_sae.state_dict())
    with torch.no_grad():  # latent 20 fires rarely but strongly: by peak alone the page would open on it
        pre = routed(model, spiky, tokens).hidden_pre[:, 6:-5, 20].flatten()
        spiky.b_enc[20] -= pre.topk(6).values[-1]  # > 0 on the 5 showable tokens where it is largest
        spiky.W_enc[:, 20] *= 100
        spiky.b_enc[20] *= 100
    data = routed_dashboard(spiky, model, tokens, "top:12", tmp_path / "top.html")
    counts, maxima = showable_firing(model, spiky, tokens)
    assert 0 < counts[20] < 20 and int(maxima.argmax()) == 20
    order = sorted(range(64), key=lambda f: (int(counts[f]) < 20, -float(maxima[f]), -int(counts[f]), f))
    expected = order[:12]
    assert data.features == expected and counts[expected[-1]] > 0 and 20 not in expected
    assert all(counts[f] >= 20 for f in expected) and maxima[expected[0]] > maxima[expected[-1]]
    for feature, page in data.vis_data.feature_data_dict.items():
        top = page.sequence_data.seq_group_data[0].seq_data
        assert all(s.feat_acts[5] > 0 for s in top)  # the example token (centre of its window) is active
        assert feature not in page.feature_tables_data.correlated_features_indices
    asked = dashboard_data(spiky, model, tokens, [20])  # asked for by name: its 5 real top rows, no zero rows
    top = asked.vis_data.feature_data_dict[20].sequence_data.seq_group_data[0].seq_data
    assert len(top) == counts[20] and all(s.feat_acts[5] > 0 for s in top)
    assert data.dead_latents == [f for f in range(64) if counts[f] == 0] and DEAD == data.dead_latents[:10]
    dashboard, start, panel = page_data(tmp_path / "top.html")
    assert start == str(expected[0]) and set(dashboard) == {str(f) for f in expected}
    shown_max = float(re.search(r"MAX = ([0-9.]+)", json.dumps(dashboard[start])).group(1))
    assert shown_max == pytest.approx(float(maxima[expected[0]]), abs=1e-3) and shown_max > 0
    assert panel["order"] == expected and panel["dead_latents"] == data.dead_latents
    note = re.search(r"<p id='dead-latents'>(.*?)</p>", (tmp_path / "top.html").read_text()).group(1)
    fired = 64 - len(data.dead_latents)
    assert note.startswith(f"top:12 requested: the 12 most active of the {fired} latents that fired on these")
    assert f"{len(data.dead_latents)} of the SAE's 64 latents never fired" in note
    assert f"opens on latent {expected[0]}. Never fired: 0, 1, 2," in note
    batch = neuronpedia_batch(data)
    assert [f["feature_index"] for f in batch["features"]] == expected
    assert batch["dead_latents"] == data.dead_latents
    assert max(batch["features"][0]["activations"][0]["values"]) > 0


def test_explicit_features_leave_out_the_dead_ones(setup, dead_sae, tmp_path):
    _, model, _, tokens, _ = setup
    data = dashboard_data(dead_sae, model, tokens, "5-14")
    _, maxima = showable_firing(model, dead_sae, tokens)
    assert data.dead_latents == [5, 6, 7, 8, 9] and sorted(data.features) == list(range(10, 15))
    assert data.features == sorted(range(10, 15), key=lambda f: -float(maxima[f]))
    assert data.summary().startswith("5-14 requested: 5 fired and are shown; 5 never fired on these tokens")


def shown_tokens(node):
    """Every (tok, tokID) of sae-dashboard's page data (its sequences' tokens), wherever it is nested."""
    if isinstance(node, dict):
        here = [(node["tok"], node["tokID"])] if "tok" in node and "tokID" in node else []
        return here + [t for value in node.values() for t in shown_tokens(value)]
    return [t for value in node for t in shown_tokens(value)] if isinstance(node, list) else []


def test_tokens_show_the_text_they_decode_to(setup):
    """Byte-level BPE pieces are written as their text ("Â£" -> "£"), a line break as ↵ wherever the page
    shows tokens (sae-dashboard writes a literal \\n)."""
    root, *_ = setup
    dashboard, *_ = page_data(root / "report.html")
    toks = shown_tokens(dashboard)
    assert ("\u21b5", NEWLINE_ID) in toks and all(tok == "\u21b5" for tok, i in toks if i == NEWLINE_ID)
    assert ("\u00a3", POUND_ID) in toks and all(tok == "\u00a3" for tok, i in toks if i == POUND_ID)
    assert not any("\\n" in tok or "\u00c2\u00a3" in tok for tok, _ in toks)
    rows = token_rows(dashboard)  # "£" split over two tokens: "" then "£" (display-only ids), never "Â", "£"
    assert not any(row[i : i + 2] == [("\u00c2", SPLIT_IDS[0]), ("\u00a3", SPLIT_IDS[1])]
                   for row in rows for i in range(len(row)))
    assert any(t == "" for row in rows for t, i in row) and ("\u00c2", SPLIT_IDS[0]) in toks  # lone: kept


def token_rows(node):
    """The page data's token sequences: lists of {"tok", "tokID"} dicts, as [(tok, tokID), ...]."""
    if isinstance(node, dict):
        return [row for value in node.values() for row in token_rows(value)]
    if isinstance(node, list) and node and all(isinstance(x, dict) and "tokID" in x for x in node):
        return [[(x["tok"], x["tokID"]) for x in node]]
    return [row for value in node for row in token_rows(value)] if isinstance(node, list) else []


def test_display_tokens_keep_every_token_and_partial_bytes():
    """Two tokens showing the same text stay two ids; a piece that is half a UTF-8 character keeps it."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"\u00c2\u00a3": 0, "\u00c2": 1, "\u0120day": 2, "\u010a": 3, "\u21b5": 4, "a\u010a\u010a": 5}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="\u00c2"))
    tok.decoder = decoders.ByteLevel()
    texts = display_tokens(PreTrainedTokenizerFast(tokenizer_object=tok))
    assert texts == {0: "\u00a3", 1: "\u00c2", 2: " day", 3: "\u21b5", 4: "\u21b5", 5: "a\u21b5\u21b5"}
    # the bundled SmolLM2 on transformers 4.x: byte-level inside a Sequence decoder
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.ByteLevel()])
    assert display_tokens(PreTrainedTokenizerFast(tokenizer_object=tok)) == texts
    plain = SimpleNamespace(get_vocab=lambda: {"<0x0A>": 4, "\n\n": 6, "\u2581day": 7})  # not byte-level
    assert display_tokens(plain) == {4: "\u21b5", 6: "\u21b5\u21b5", 7: "\u2581day"}


def test_html_and_json_written_from_one_computation(setup, tmp_path):
    """write_dashboard_html and neuronpedia_batch only read the data: neither routes a token nor runs
    sae-dashboard again (a spy counts both)."""
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    import sae_lens_routing.dashboard.report as report

    _, model, sae, tokens, _ = setup
    calls = {"run": 0, "route": 0}
    run, route = SaeVisRunner.run, report.routed_activations

    def counting(name, fn):
        def spy(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return spy

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SaeVisRunner, "run", counting("run", run))
        mp.setattr(report, "routed_activations", counting("route", route))
        data = dashboard_data(sae, model, tokens, "top:3")
        assert calls == {"run": 1, "route": 2}  # 32 sequences in minibatches of 16
        write_dashboard_html(data, tmp_path / "one.html")
        batch = neuronpedia_batch(data)
        assert calls == {"run": 1, "route": 2}
    _, start, panel = page_data(tmp_path / "one.html")
    assert panel["order"] == [f["feature_index"] for f in batch["features"]] == data.features
    assert start == str(data.features[0])


def test_a_character_split_over_byte_level_tokens_shows_once():
    """"£" as two byte-level tokens (C2, A3): contexts and the page show "" then "£", never "Â£"."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from sae_lens_routing.analysis.feature_contexts import token_texts
    from sae_lens_routing.dashboard.report import characters_joined

    tok = Tokenizer(models.WordLevel(vocab={"\u00c2": 0, "\u00a3": 1, "\u0120day": 2, "5": 3}, unk_token="5"))
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    assert token_texts(hf, [2, 0, 1, 3]) == [" day", "", "\u00a3", "5"]
    lone = token_texts(hf, [1, 2, 0, 0, 1, 0])  # a piece that starts or ends no character stays alone
    assert lone == ["\ufffd", " day", "\ufffd", "", "\u00a3", "\ufffd"]
    assert [token_texts(hf, [i])[0] for i in (0, 1)] == ["\ufffd", "\ufffd"]  # each piece alone
    seq = SimpleNamespace(token_ids=[2, 0, 1, 3])
    group = SimpleNamespace(seq_data=[seq])
    vis = SimpleNamespace(model=SimpleNamespace(tokenizer=hf, cfg=SimpleNamespace(d_vocab=8)),
                          feature_data_dict={0: SimpleNamespace(sequence_data=SimpleNamespace(
                              seq_group_data=[group]))})  # fmt: skip
    shown = display_tokens(hf)
    assert shown[0] + shown[1] == "\u00c2\u00a3"  # what sae-dashboard alone would show
    with characters_joined(vis, shown) as joined:
        texts = {i: t for t, i in joined}
        assert min(texts) >= 8  # past the vocabulary and the model's d_vocab
        assert [texts.get(i, shown.get(i)) for i in seq.token_ids] == [" day", "", "\u00a3", "5"]
    assert seq.token_ids == [2, 0, 1, 3]  # the real ids are back
