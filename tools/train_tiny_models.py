#!/usr/bin/env python3
"""Train the embedded default models: a small dense and a small MoE ``llama`` code model on the
Python standard library, exported as GGUF (see edge_rt/models/README.md for the model card).

Reproduce (about 35-40 minutes on 2 cores; torch==2.13.0 CPU and tokenizers are dev-only dependencies):

    nice -n 19 python3 tools/train_tiny_models.py --parallel

(--parallel trains the two models side by side, one single-threaded process each; without it they train
one after the other with 2 threads. Thread counts change float summation order, not the recipe.)

Stages (each reads what the previous ones wrote under --work, default build/tiny_models/):

  corpus     the .py files of this Python's standard library (sysconfig stdlib path), without
             site-packages, test directories (test/, tests/, idle_test/), encodings/ (codec tables),
             pydoc_data/ (a generated text dump) and _sysconfigdata*; split by file:
             sha256(relative path) -> held-out when its first 8 bytes mod 100 < HELDOUT_PERCENT.
             The split is written to edge_rt/models/SPLIT.md.
  tokenizer  byte-level BPE (tokenizers, GPT-2 regex pre-tokenization = llama.cpp's 'gpt-2'
             pre-tokenizer), vocab 4096, '<|endoftext|>' (id 0, control) is BOS/EOS and ends each file.
  dense      llama: n_embd 256, 6 layers, 8 heads / 4 KV heads, n_ff 768, ctx 256, untied head.
  moe        llama + Mixtral-style MoE FFN: 4 layers, 8 experts top-2, expert n_ff 256, softmax router
             -> top-2 -> weights renormalised (llama.cpp build_moe_ffn with norm_w=true, SOFTMAX
             gating), Switch-style load-balancing loss.
  export     models/tiny-code-{dense,moe}-f16.gguf (F16 masters, norms and router F32) and
             edge_rt/models/default.gguf (dense, Q8_0, norms F32).
  verify     llama.cpp (llama-cpp-python) perplexity on the same held-out windows as the script's,
             unigram baseline, edge_rt vs llama.cpp logits, samples; writes the report JSONs.

RoPE: llama.cpp's ``llama`` arch applies RoPE in NORM mode (rotates adjacent pairs (2i, 2i+1)) to the
Q/K weights exactly as stored in the GGUF, so the models are trained with that interleaved-pair RoPE
and Q/K are exported unpermuted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HELDOUT_PERCENT = 8
SEED = 1234
N_VOCAB = 4096
N_CTX = 256
EOT = "<|endoftext|>"
N_EVAL_WINDOWS = int(os.environ.get("EVAL_WINDOWS", "128"))       # evenly spaced non-overlapping 256-token windows of the held-out stream

DENSE = dict(n_embd=256, n_layer=6, n_head=8, n_head_kv=4, n_ff=768, n_expert=0, n_expert_used=0)
MOE = dict(n_embd=256, n_layer=4, n_head=8, n_head_kv=4, n_ff=256, n_expert=8, n_expert_used=2)
TRAIN = {
    # steps sized for ~40 minutes with the two models trained side by side, one thread each (--parallel),
    # on a 2-core machine shared with other work
    "dense": dict(steps=600, batch=16, lr=3e-3, warmup=40, wd=0.1),
    "moe": dict(steps=1000, batch=16, lr=3e-3, warmup=40, wd=0.1, aux_coef=0.01),
}
ROPE_THETA = 10000.0
RMS_EPS = 1e-5

EXCLUDE_DIRS = {"site-packages", "test", "tests", "idle_test", "encodings", "pydoc_data", "__pycache__"}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ------------------------------------------------------------------------------------------------
# corpus and split
# ------------------------------------------------------------------------------------------------

def corpus_files():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for p in sorted(stdlib.rglob("*.py")):
        rel = p.relative_to(stdlib)
        if any(part in EXCLUDE_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("_sysconfigdata"):
            continue
        files.append((rel.as_posix(), p))
    return stdlib, files


def is_heldout(rel: str) -> bool:
    h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little")
    return h % 100 < HELDOUT_PERCENT


def read_text(p: Path) -> str:
    return p.read_bytes().decode("utf-8", errors="replace")


def stage_corpus(work: Path):
    stdlib, files = corpus_files()
    train = [(r, p) for r, p in files if not is_heldout(r)]
    held = [(r, p) for r, p in files if is_heldout(r)]
    tb = sum(p.stat().st_size for _, p in train)
    hb = sum(p.stat().st_size for _, p in held)
    info = dict(python=sys.version.split()[0], stdlib=str(stdlib), n_files=len(files), n_train=len(train),
                n_heldout=len(held), train_bytes=tb, heldout_bytes=hb, heldout_fraction_bytes=hb / (tb + hb),
                heldout_files=[r for r, _ in held])
    (work / "corpus.json").write_text(json.dumps(info, indent=1))
    lines = [
        "# Corpus split of the embedded default models",
        "",
        f"Generated by `tools/train_tiny_models.py` (stage `corpus`) on Python {info['python']}.",
        "",
        "Corpus: every `.py` file under `sysconfig.get_paths()['stdlib']`, recursively, except files in",
        "directories named `site-packages`, `test`, `tests`, `idle_test`, `encodings` (codec tables),",
        "`pydoc_data` (a generated text dump), `__pycache__`, `config-*`, and `_sysconfigdata*.py`.",
        "",
        f"Split by file: `int.from_bytes(sha256(relative_path.encode())[:8], 'little') % 100 < {HELDOUT_PERCENT}`",
        "-> held-out, else train (relative path with `/` separators, relative to the stdlib directory).",
        "",
        f"Files: {len(files)} ({len(train)} train, {len(held)} held-out); bytes: {tb} train, {hb} held-out "
        f"({100 * info['heldout_fraction_bytes']:.1f}% held-out).",
        "",
        "Token streams: files in sorted path order, each file's text followed by `<|endoftext|>`.",
        "",
        "## Held-out files",
        "",
    ] + [f"- `{r}`" for r, _ in held]
    (ROOT / "edge_rt" / "models").mkdir(parents=True, exist_ok=True)
    (ROOT / "edge_rt" / "models" / "SPLIT.md").write_text("\n".join(lines) + "\n")
    log(f"corpus: {len(files)} files, train {len(train)} ({tb} B), held-out {len(held)} ({hb} B, "
        f"{100 * info['heldout_fraction_bytes']:.1f}%)")
    return train, held


# ------------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------------

def stage_tokenizer(work: Path, train, held):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=N_VOCAB, special_tokens=[EOT], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = [read_text(p) for _, p in train]
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.get_vocab_size() == N_VOCAB, tok.get_vocab_size()
    assert tok.token_to_id(EOT) == 0
    tok.save(str(work / "tokenizer.json"))
    eot = tok.token_to_id(EOT)
    for name, fl in (("train", train), ("heldout", held)):
        txt = texts if name == "train" else [read_text(p) for _, p in fl]
        ids = []
        for enc in tok.encode_batch(txt):
            ids.extend(enc.ids)
            ids.append(eot)
        arr = np.asarray(ids, dtype=np.uint16)
        arr.tofile(work / f"{name}.u16")
        info = json.loads((work / "corpus.json").read_text())
        info[f"{name}_tokens"] = int(len(arr))
        (work / "corpus.json").write_text(json.dumps(info, indent=1))
        log(f"tokenizer: {name} {len(arr)} tokens ({sum(len(t) for t in txt) / len(arr):.2f} chars/token)")


def load_tokens(work: Path, name: str) -> np.ndarray:
    return np.fromfile(work / f"{name}.u16", dtype=np.uint16).astype(np.int64)


def eval_windows(held: np.ndarray, n: int = N_EVAL_WINDOWS) -> np.ndarray:
    """n evenly spaced, non-overlapping N_CTX-token windows of the held-out stream (n, N_CTX)."""
    total = len(held) // N_CTX
    idx = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(np.int64))
    return np.stack([held[i * N_CTX:(i + 1) * N_CTX] for i in idx])


# ------------------------------------------------------------------------------------------------
# model (torch), numerically the llama.cpp `llama` graph
# ------------------------------------------------------------------------------------------------

def build_model(cfg):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * self.weight

    n_embd, n_head, n_kv = cfg["n_embd"], cfg["n_head"], cfg["n_head_kv"]
    hd = n_embd // n_head
    inv = ROPE_THETA ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(N_CTX, dtype=torch.float64)[:, None] * inv[None]
    COS, SIN = ang.cos().float(), ang.sin().float()        # (T, hd/2)

    def rope(x):  # x (B, T, H, hd); NORM mode: pairs (2i, 2i+1) rotated by pos * theta^(-2i/hd)
        T = x.shape[1]
        c, s = COS[:T, None, :], SIN[:T, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm = RMSNorm(n_embd)
            self.wq = nn.Linear(n_embd, n_head * hd, bias=False)
            self.wk = nn.Linear(n_embd, n_kv * hd, bias=False)
            self.wv = nn.Linear(n_embd, n_kv * hd, bias=False)
            self.wo = nn.Linear(n_head * hd, n_embd, bias=False)
            self.ffn_norm = RMSNorm(n_embd)
            E, ff = cfg["n_expert"], cfg["n_ff"]
            if E:
                self.router = nn.Linear(n_embd, E, bias=False)
                self.w_gate = nn.Parameter(torch.empty(E, ff, n_embd))
                self.w_up = nn.Parameter(torch.empty(E, ff, n_embd))
                self.w_down = nn.Parameter(torch.empty(E, n_embd, ff))
            else:
                self.w1 = nn.Linear(n_embd, ff, bias=False)   # gate
                self.w3 = nn.Linear(n_embd, ff, bias=False)   # up
                self.w2 = nn.Linear(ff, n_embd, bias=False)   # down

        def attn(self, x):
            B, T, _ = x.shape
            q = rope(self.wq(x).view(B, T, n_head, hd))
            k = rope(self.wk(x).view(B, T, n_kv, hd))
            v = self.wv(x).view(B, T, n_kv, hd)
            k = k.repeat_interleave(n_head // n_kv, dim=2)   # q head h uses kv head h // (n_head/n_kv)
            v = v.repeat_interleave(n_head // n_kv, dim=2)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True)
            return self.wo(o.transpose(1, 2).reshape(B, T, n_head * hd))

        def ffn(self, x, stats):
            if not cfg["n_expert"]:
                return self.w2(F.silu(self.w1(x)) * self.w3(x))
            B, T, D = x.shape
            E, K = cfg["n_expert"], cfg["n_expert_used"]
            xf = x.reshape(-1, D)
            probs = F.softmax(self.router(xf).float(), dim=-1)            # (N, E)
            topw, topi = probs.topk(K, dim=-1)
            topw = topw / topw.sum(-1, keepdim=True)                       # norm_w
            out = torch.zeros_like(xf)
            for e in range(E):
                rows, slot = (topi == e).nonzero(as_tuple=True)
                if rows.numel() == 0:
                    continue
                xe = xf[rows]
                ye = (F.silu(xe @ self.w_gate[e].t()) * (xe @ self.w_up[e].t())) @ self.w_down[e].t()
                out.index_add_(0, rows, ye * topw[rows, slot, None])
            # Switch-style load balancing: E * sum_e f_e * P_e (f_e: fraction of routed slots)
            f = torch.bincount(topi.reshape(-1), minlength=E).float() / topi.numel()
            stats.append(dict(aux=E * (f * probs.mean(0)).sum(), probs=probs.detach(), topi=topi.detach()))
            return out.view(B, T, D)

        def forward(self, x, stats):
            x = x + self.attn(self.attn_norm(x))
            return x + self.ffn(self.ffn_norm(x), stats)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(N_VOCAB, n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg["n_layer"]))
            self.norm = RMSNorm(n_embd)
            self.out = nn.Linear(n_embd, N_VOCAB, bias=False)
            std = 0.02
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    s = std / math.sqrt(2 * cfg["n_layer"]) if name.endswith(("wo.weight", "w2.weight", "w_down")) else std
                    nn.init.normal_(p, 0.0, s)

        def forward(self, ids):
            stats = []
            x = self.tok(ids)
            for b in self.blocks:
                x = b(x, stats)
            return self.out(self.norm(x)), stats

    return LM()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def active_params(cfg, total) -> int:
    if not cfg["n_expert"]:
        return total
    per_expert = 3 * cfg["n_ff"] * cfg["n_embd"]
    return total - cfg["n_layer"] * (cfg["n_expert"] - cfg["n_expert_used"]) * per_expert


def evaluate(model, windows: np.ndarray, batch: int = 16):
    """Mean NLL per predicted token (positions 1..T-1 of each window), and MoE routing stats."""
    import torch
    import torch.nn.functional as F

    model.eval()
    nll, n = 0.0, 0
    usage, tok_ent = None, None
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            ids = torch.from_numpy(windows[i:i + batch].astype(np.int64))
            logits, stats = model(ids)
            lp = F.log_softmax(logits[:, :-1].float(), -1)
            nll += -lp.gather(-1, ids[:, 1:, None]).sum().item()
            n += ids[:, 1:].numel()
            if stats:
                if usage is None:
                    usage = [np.zeros(s["probs"].shape[1]) for s in stats]
                    tok_ent = [0.0 for _ in stats]
                for il, s in enumerate(stats):
                    usage[il] += np.bincount(s["topi"].reshape(-1).numpy(), minlength=len(usage[il]))
                    p = s["probs"].clamp_min(1e-12)
                    tok_ent[il] += float(-(p * p.log()).sum(-1).sum()) / math.log(2)
    model.train()
    res = dict(nll=nll / n, ppl=math.exp(nll / n), n_tokens=n)
    if usage is not None:
        ntok = len(windows) * windows.shape[1]
        layers = []
        for il, u in enumerate(usage):
            f = u / u.sum()
            h = float(-(f[f > 0] * np.log2(f[f > 0])).sum())
            layers.append(dict(layer=il, usage=[round(float(x), 4) for x in f], usage_entropy_bits=round(h, 3),
                               router_entropy_bits=round(tok_ent[il] / ntok, 3),
                               max_bits=round(math.log2(len(f)), 3)))
        res["routing"] = layers
    return res


def stage_train(work: Path, which: str):
    import torch

    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    torch.manual_seed(SEED)
    cfg = DENSE if which == "dense" else MOE
    tc = dict(TRAIN[which])
    if os.environ.get("TRAIN_STEPS"):           # smoke tests only
        tc["steps"] = int(os.environ["TRAIN_STEPS"])
    train = load_tokens(work, "train")
    windows = eval_windows(load_tokens(work, "heldout"))
    model = build_model(cfg)
    total = n_params(model)
    log(f"{which}: {total} params ({active_params(cfg, total)} active), {tc}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=tc["wd"]), dict(params=no_decay, weight_decay=0.0)],
                            lr=tc["lr"], betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(SEED + (0 if which == "dense" else 1))
    steps, B = tc["steps"], tc["batch"]
    t0 = time.time()
    hist = []
    for step in range(steps):
        lr = tc["lr"] * (step + 1) / tc["warmup"] if step < tc["warmup"] else \
            0.1 * tc["lr"] + 0.9 * tc["lr"] * 0.5 * (1 + math.cos(math.pi * (step - tc["warmup"]) / (steps - tc["warmup"])))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, len(train) - N_CTX - 1, B)
        batch = torch.from_numpy(np.stack([train[s:s + N_CTX + 1] for s in starts]))
        logits, stats = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, N_VOCAB), batch[:, 1:].reshape(-1))
        aux = sum(s["aux"] for s in stats) / len(stats) if stats else torch.zeros(())
        (loss + tc.get("aux_coef", 0.0) * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == steps - 1:
            el = time.time() - t0
            log(f"{which} step {step}/{steps} loss {loss.item():.3f} aux {aux.item():.3f} lr {lr:.2e} "
                f"{el / (step + 1):.2f} s/step")
            hist.append((step, round(loss.item(), 4)))
    train_s = time.time() - t0
    ev = evaluate(model, windows)
    log(f"{which}: trained in {train_s:.0f} s; held-out ppl (script, fp32) {ev['ppl']:.3f} over {ev['n_tokens']} tokens")
    torch.save(model.state_dict(), work / f"{which}.pt")
    rep = dict(config=cfg, train=tc, params=total, active_params=active_params(cfg, total), train_seconds=round(train_s, 1),
               tokens_seen=steps * B * N_CTX, loss_history=hist, heldout_script=ev,
               threads=torch.get_num_threads())
    (work / f"{which}_train.json").write_text(json.dumps(rep, indent=1))


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------

def gguf_tensors(which: str, sd):
    """(name, float32 numpy array in GGUF order (numpy shape = reversed ne), is_norm)."""
    cfg = DENSE if which == "dense" else MOE
    def t(k):
        return sd[k].float().numpy()

    out = [("token_embd.weight", t("tok.weight"), False)]
    for i in range(cfg["n_layer"]):
        p = f"blocks.{i}."
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", t(p + "attn_norm.weight"), True),
                (b + "attn_q.weight", t(p + "wq.weight"), False),
                (b + "attn_k.weight", t(p + "wk.weight"), False),
                (b + "attn_v.weight", t(p + "wv.weight"), False),
                (b + "attn_output.weight", t(p + "wo.weight"), False),
                (b + "ffn_norm.weight", t(p + "ffn_norm.weight"), True)]
        if cfg["n_expert"]:
            out += [(b + "ffn_gate_inp.weight", t(p + "router.weight"), True),     # kept F32 (as llama.cpp does)
                    (b + "ffn_gate_exps.weight", t(p + "w_gate"), False),       # ne [n_embd, n_ff, n_expert]
                    (b + "ffn_up_exps.weight", t(p + "w_up"), False),
                    (b + "ffn_down_exps.weight", t(p + "w_down"), False)]       # ne [n_ff, n_embd, n_expert]
        else:
            out += [(b + "ffn_gate.weight", t(p + "w1.weight"), False),
                    (b + "ffn_up.weight", t(p + "w3.weight"), False),
                    (b + "ffn_down.weight", t(p + "w2.weight"), False)]
    out += [("output_norm.weight", t("norm.weight"), True), ("output.weight", t("out.weight"), False)]
    return out


def write_gguf(path: Path, which: str, sd, wtype: str, tok_json: Path):
    import gguf
    from gguf.quants import quantize

    cfg = DENSE if which == "dense" else MOE
    tj = json.loads(tok_json.read_text())
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for s, i in vocab.items():
        tokens[i] = s
    assert all(x is not None for x in tokens)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    types = [gguf.TokenType.CONTROL if s == EOT else gguf.TokenType.NORMAL for s in tokens]

    from edge_rt.gguf_file import save_writer

    w = gguf.GGUFWriter(None, "llama")  # the file is named when written, by save_writer
    w.add_name(f"edge_rt tiny-code-{which}")
    w.add_type("model")
    w.add_string("general.description",
                 f"edge_rt embedded {which} code model trained on the Python {sys.version.split()[0]} standard "
                 "library by tools/train_tiny_models.py")
    w.add_context_length(N_CTX)
    w.add_embedding_length(cfg["n_embd"])
    w.add_feed_forward_length(cfg["n_ff"])
    w.add_block_count(cfg["n_layer"])
    w.add_head_count(cfg["n_head"])
    w.add_head_count_kv(cfg["n_head_kv"])
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_rope_dimension_count(cfg["n_embd"] // cfg["n_head"])
    w.add_vocab_size(N_VOCAB)
    if cfg["n_expert"]:
        w.add_expert_count(cfg["n_expert"])
        w.add_expert_used_count(cfg["n_expert_used"])
        w.add_expert_feed_forward_length(cfg["n_ff"])
    w.add_file_type({"F16": 1, "Q8_0": 7}[wtype])
    if wtype == "Q8_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    for name, arr, is_norm in gguf_tensors(which, sd):
        if is_norm:
            w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
        elif wtype == "F16":
            w.add_tensor(name, arr.astype(np.float16))
        else:
            q = quantize(np.ascontiguousarray(arr, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    save_writer(w, path)
    log(f"export: {path} ({path.stat().st_size} bytes)")


def stage_export(work: Path):
    import torch

    (ROOT / "models").mkdir(exist_ok=True)
    for which in ("dense", "moe"):
        if not (work / f"{which}.pt").exists():
            log(f"export: no {which}.pt, skipped")
            continue
        sd = torch.load(work / f"{which}.pt")
        write_gguf(ROOT / "models" / f"tiny-code-{which}-f16.gguf", which, sd, "F16", work / "tokenizer.json")
        if which == "dense":
            write_gguf(ROOT / "edge_rt" / "models" / "default.gguf", which, sd, "Q8_0", work / "tokenizer.json")


# ------------------------------------------------------------------------------------------------
# verify
# ------------------------------------------------------------------------------------------------

def llama_cpp_nll(path: Path, windows: np.ndarray, threads: int = 1):

    from edge_rt.llama_cpp_peer import open_llama

    llm = open_llama(path, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=threads,
                     n_threads_batch=threads, logits_all=True, flash_attn=False, verbose=False, seed=0)
    nll, n = 0.0, 0
    for w in windows:
        llm.reset()
        llm.eval(w.tolist())
        lg = np.asarray(llm.scores[:len(w)], dtype=np.float64)[:-1]
        m = lg.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(lg - m).sum(-1, keepdims=True)))[:, 0]
        nll += float((lse - lg[np.arange(len(w) - 1), w[1:]]).sum())
        n += len(w) - 1
    return llm, nll / n, n


def sample(llm, prompt: str, n: int, temperature: float, seed: int) -> str:
    out = llm.create_completion(prompt, max_tokens=n, temperature=temperature, top_k=0, top_p=1.0, min_p=0.0,
                                repeat_penalty=1.0, seed=seed)
    return out["choices"][0]["text"]


def stage_verify(work: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(work / "tokenizer.json"))
    train = load_tokens(work, "train")
    held = load_tokens(work, "heldout")
    windows = eval_windows(held)
    targets = windows[:, 1:].reshape(-1)
    counts = np.bincount(train, minlength=N_VOCAB).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    unigram = math.exp(-logp[targets].mean())
    report = dict(eval=dict(windows=int(len(windows)), window_tokens=N_CTX, predicted_tokens=int(targets.size),
                            heldout_stream_tokens=int(len(held))),
                  unigram_ppl=round(unigram, 3))
    log(f"verify: unigram baseline ppl {unigram:.3f}")
    for which in ("dense", "moe"):
        tj = work / f"{which}_train.json"
        if not tj.exists():
            continue
        tr = json.loads(tj.read_text())
        entry = dict(params=tr["params"], active_params=tr["active_params"], train_seconds=tr["train_seconds"],
                     tokens_seen=tr["tokens_seen"], ppl_script_fp32=round(tr["heldout_script"]["ppl"], 4))
        if "routing" in tr["heldout_script"]:
            entry["routing"] = tr["heldout_script"]["routing"]
        files = [("F16", ROOT / "models" / f"tiny-code-{which}-f16.gguf")]
        if which == "dense":
            files.append(("Q8_0", ROOT / "edge_rt" / "models" / "default.gguf"))
        for wt, path in files:
            llm, nll, n = llama_cpp_nll(path, windows)
            ppl = math.exp(nll)
            rel = ppl / tr["heldout_script"]["ppl"] - 1
            entry[f"ppl_llamacpp_{wt}"] = round(ppl, 4)
            entry[f"ppl_rel_diff_{wt}"] = round(rel, 5)
            log(f"verify: {which} {wt} llama.cpp ppl {ppl:.4f} vs script {tr['heldout_script']['ppl']:.4f} ({100 * rel:+.2f}%)")
            if wt == "F16" or which == "dense":
                entry[f"samples_{wt}"] = {p: [sample(llm, p, 48, 0.8, s) for s in (1, 2)] + [sample(llm, p, 48, 0.0, 0)]
                                         for p in ("def ", "import ", "class ")}
            if wt == "F16":
                entry["torch_vs_llamacpp_F16"] = torch_vs_llamacpp(work, which, llm, windows)
            # tokenizer agreement on held-out text (llama.cpp vs tokenizers)
            if wt == "F16" and which == "dense":
                txt = tok.decode(windows[0].tolist())
                entry["tokenizer_agrees_llamacpp"] = llm.tokenize(txt.encode(), add_bos=False, special=False) == tok.encode(txt).ids
            del llm
        if which == "dense":
            entry["edge_rt_parity"] = edge_rt_parity(ROOT / "edge_rt" / "models" / "default.gguf", windows, tok)
        report[which] = entry
    (work / "report.json").write_text(json.dumps(report, indent=1))
    (ROOT / "models" / "tiny_models_report.json").write_text(json.dumps(report, indent=1))
    write_default_json(work, report, windows)
    log("verify: done")


def torch_vs_llamacpp(work: Path, which: str, llm, windows: np.ndarray):
    """The training graph (fp32) vs llama.cpp on the F16 export: max |diff| / std of the logits."""
    import torch

    model = build_model(DENSE if which == "dense" else MOE)
    model.load_state_dict(torch.load(work / f"{which}.pt"))
    model.eval()
    ids = windows[len(windows) // 2]
    with torch.no_grad():
        ref = model(torch.from_numpy(ids[None].astype(np.int64)))[0][0].numpy()
    llm.reset()
    llm.eval(ids.tolist())
    got = np.asarray(llm.scores[:len(ids)], dtype=np.float32)
    res = dict(max_diff_over_std=round(float(np.abs(got - ref).max() / ref.std()), 5),
               argmax_agree=float((got.argmax(1) == ref.argmax(1)).mean()))
    log(f"verify: {which} torch fp32 vs llama.cpp F16 logits {res}")
    return res


def edge_rt_parity(path: Path, windows: np.ndarray, tok):
    """edge_rt vs llama.cpp logits (max |diff| / std) on held-out snippets of a few lengths."""
    sys.path.insert(0, str(ROOT))

    import edge_rt
    from edge_rt.llama_cpp_peer import open_llama

    llm = open_llama(path, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=1,
                     n_threads_batch=1, logits_all=True, flash_attn=False, verbose=False, seed=0)
    m = edge_rt.load(str(path), threads=2, n_ctx=N_CTX)
    res = []
    for k, L in ((1, 16), (5, 64), (9, 256)):
        ids = windows[k % len(windows)][:L].tolist()
        llm.reset()
        llm.eval(ids)
        ref = np.asarray(llm.scores[:L], dtype=np.float32)
        got = np.asarray(m.logits(ids))
        res.append(dict(length=L, max_diff_over_std=round(float(np.abs(got - ref).max() / ref.std()), 5),
                        argmax_agree=float((got.argmax(1) == ref.argmax(1)).mean())))
    txt = tok.decode(windows[3 % len(windows)].tolist())
    res.append(dict(tokenizer_agrees_edge_rt=list(m.tokenize(txt)) == tok.encode(txt).ids))
    log(f"verify: edge_rt parity {res}")
    return res


def write_default_json(work: Path, report, windows):
    """edge_rt/models/default.json: what the tests check the shipped default.gguf against."""
    d = report.get("dense")
    if not d:
        return
    import llama_cpp  # noqa: F401

    short = windows[:: max(1, len(windows) // 8)][:8]
    _, nll, n = llama_cpp_nll(ROOT / "edge_rt" / "models" / "default.gguf", short)
    info = dict(
        model="tiny-code-dense Q8_0 (see README.md)",
        n_ctx=N_CTX,
        heldout_ppl_llamacpp_q8_0=d.get("ppl_llamacpp_Q8_0"),
        heldout_ppl_script_fp32=d["ppl_script_fp32"],
        unigram_ppl=report["unigram_ppl"],
        short_check=dict(description="ppl of default.gguf in llama.cpp over these held-out windows "
                                     "(predicting positions 1..255 of each)",
                         ppl_llamacpp_q8_0=round(math.exp(nll), 4), windows=short.tolist()),
    )
    (ROOT / "edge_rt" / "models" / "default.json").write_text(json.dumps(info))
    log(f"verify: default.json short-check ppl {math.exp(nll):.4f}")


def stage_card(work: Path):
    """edge_rt/models/README.md, the model card, from the reports of the other stages."""
    r = json.loads((work / "report.json").read_text())
    c = json.loads((work / "corpus.json").read_text())
    d, m = r["dense"], r["moe"]
    td = json.loads((work / "dense_train.json").read_text())
    tm = json.loads((work / "moe_train.json").read_text())

    def mb(p):
        return f"{p.stat().st_size / 1e6:.1f} MB"

    def pct(x):
        return f"{100 * x:+.2f}%"

    L = []
    a = L.append
    a("# Embedded default models\n")
    a("Two small code models trained from scratch on the Python standard library by "
      "`tools/train_tiny_models.py`, so that edge_rt has trained weights without downloading anything: "
      "a dense `llama` model, shipped quantized to Q8_0 as `edge_rt/models/default.gguf` (what "
      "`edge-rt run` uses without a MODEL argument), and a Mixtral-style MoE model. F16 masters of both are "
      "kept in the repository under `models/` for quantization work and tests.\n")
    a("| file | what | size |\n| --- | --- | --- |")
    a(f"| `edge_rt/models/default.gguf` | dense, Q8_0 (norms F32), shipped in the wheel | {mb(ROOT / 'edge_rt/models/default.gguf')} |")
    a(f"| `models/tiny-code-dense-f16.gguf` | dense, F16 master (norms F32) | {mb(ROOT / 'models/tiny-code-dense-f16.gguf')} |")
    a(f"| `models/tiny-code-moe-f16.gguf` | MoE, F16 master (norms and router F32) | {mb(ROOT / 'models/tiny-code-moe-f16.gguf')} |")
    a("| `edge_rt/models/default.json` | held-out windows and perplexity the tests check default.gguf against | |")
    a("| `edge_rt/models/SPLIT.md` | the corpus split (rule and held-out file list) | |")
    a("| `models/tiny_models_report.json` | every number below, as measured by the script | |\n")
    a("## Architecture\n")
    a("Both are GGUF `llama` architecture (llama.cpp and edge_rt read them as such): RMSNorm (eps 1e-5), "
      "RoPE (base 10000, NORM mode: adjacent pairs rotated, as llama.cpp applies it to `llama` GGUF weights; "
      "the models are trained with that RoPE, so Q/K are exported unpermuted), SwiGLU FFN, GQA, untied output "
      "head, context 256. Vocabulary 4096.\n")
    a("| | dense | MoE |\n| --- | --- | --- |")
    a(f"| layers | {DENSE['n_layer']} | {MOE['n_layer']} |")
    a(f"| n_embd | {DENSE['n_embd']} | {MOE['n_embd']} |")
    a(f"| heads / KV heads (head dim) | {DENSE['n_head']} / {DENSE['n_head_kv']} ({DENSE['n_embd'] // DENSE['n_head']}) "
      f"| {MOE['n_head']} / {MOE['n_head_kv']} ({MOE['n_embd'] // MOE['n_head']}) |")
    a(f"| FFN | SwiGLU, n_ff {DENSE['n_ff']} | {MOE['n_expert']} SwiGLU experts of n_ff {MOE['n_ff']}, top-{MOE['n_expert_used']} |")
    a(f"| parameters | {d['params']:,} | {m['params']:,} total, {m['active_params']:,} active per token |")
    a("\nMoE routing is llama.cpp's `build_moe_ffn` for `LLM_ARCH_LLAMA` (softmax gating, `norm_w = true`): "
      "softmax over the 8 router logits, the top-2 experts, their two probabilities renormalised to sum to 1. "
      "GGUF tensors `blk.N.ffn_gate_inp.weight` (ne [256, 8]), `blk.N.ffn_{gate,up}_exps.weight` "
      "(ne [256, 256, 8]), `blk.N.ffn_down_exps.weight` (ne [256, 256, 8]); metadata `llama.expert_count` 8, "
      "`llama.expert_used_count` 2, `llama.expert_feed_forward_length` 256 (and `llama.feed_forward_length` "
      "256, which llama.cpp's `llama` loader uses for the expert shapes). Training adds a Switch-style "
      f"load-balancing loss (coefficient {TRAIN['moe']['aux_coef']}, `E * sum_e f_e * P_e`, averaged over layers).\n")
    a("## Corpus, split, tokenizer\n")
    a(f"The `.py` files of the standard library of the Python that runs the script (here Python {c['python']}), "
      "without `site-packages`, test directories (`test/`, `tests/`, `idle_test/`), `encodings/` (codec "
      "tables), `pydoc_data/` and `_sysconfigdata*`. Split by file: held-out when the first 8 bytes of "
      f"`sha256(relative path)` (little-endian) mod 100 < {HELDOUT_PERCENT}. {c['n_files']} files: "
      f"{c['n_train']} train ({c['train_bytes'] / 1e6:.2f} MB), {c['n_heldout']} held-out "
      f"({c['heldout_bytes'] / 1e6:.2f} MB, {100 * c['heldout_fraction_bytes']:.1f}% of the bytes); the "
      "held-out list is in `SPLIT.md`. Each file's text is followed by `<|endoftext|>`.\n")
    a("Tokenizer: byte-level BPE (`tokenizers`, GPT-2 regex pre-tokenization, which is llama.cpp's `gpt-2` "
      "pre-tokenizer) trained on the train split, 4096 tokens: `<|endoftext|>` (id 0, control, BOS and EOS; "
      "no BOS is added), the 256 byte tokens and 3839 merges. Written to the GGUF as `tokenizer.ggml.model` "
      f"`gpt2`, `tokenizer.ggml.pre` `gpt-2`. {c.get('train_tokens', 0):,} train tokens, "
      f"{r['eval']['heldout_stream_tokens']:,} held-out tokens. llama.cpp's and edge_rt's tokenizations of held-out text equal the training tokenizer's: "
      f"{d.get('tokenizer_agrees_llamacpp')} / {d['edge_rt_parity'][-1].get('tokenizer_agrees_edge_rt')}.\n")
    a("## Training\n")
    a(f"AdamW (betas 0.9/0.95, weight decay {TRAIN['dense']['wd']} on matrices), peak lr {TRAIN['dense']['lr']}, "
      f"linear warm-up {TRAIN['dense']['warmup']} steps then cosine to 10%, gradient clipping 1.0, batches of "
      f"{TRAIN['dense']['batch']} random 256-token windows of the train stream, fp32, seed {SEED}, "
      f"trained side by side (`--parallel`: one process per model, {td['threads']} thread each) under `nice -n 19` "
      "on a 2-core machine shared with other benchmarks and tests, so the times below are upper bounds.\n")
    a("| | dense | MoE |\n| --- | --- | --- |")
    a(f"| steps | {td['train']['steps']} | {tm['train']['steps']} |")
    a(f"| tokens seen | {td['tokens_seen']:,} | {tm['tokens_seen']:,} |")
    a(f"| training time | {td['train_seconds'] / 60:.1f} min | {tm['train_seconds'] / 60:.1f} min |")
    a(f"| final training loss | {td['loss_history'][-1][1]} | {tm['loss_history'][-1][1]} |\n")
    a("## Held-out perplexity per token\n")
    a(f"Over {r['eval']['windows']} evenly spaced, non-overlapping 256-token windows of the held-out token "
      f"stream; each window is evaluated on its own (no BOS) and positions 1..255 are predicted "
      f"({r['eval']['predicted_tokens']:,} predicted tokens). \"script\" is the training graph in fp32 torch; "
      "llama.cpp is llama-cpp-python 0.3.36 on the GGUF file, the same windows. Unigram baseline: token "
      "frequencies of the train split with add-one smoothing, on the same predicted tokens.\n")
    a("| model | script (fp32) | llama.cpp F16 | llama.cpp Q8_0 |\n| --- | --- | --- | --- |")
    a(f"| dense | {d['ppl_script_fp32']:.3f} | {d['ppl_llamacpp_F16']:.3f} ({pct(d['ppl_rel_diff_F16'])}) "
      f"| {d['ppl_llamacpp_Q8_0']:.3f} ({pct(d['ppl_rel_diff_Q8_0'])}) |")
    a(f"| MoE | {m['ppl_script_fp32']:.3f} | {m['ppl_llamacpp_F16']:.3f} ({pct(m['ppl_rel_diff_F16'])}) | |")
    a(f"| unigram baseline | {r['unigram_ppl']:.3f} | | |\n")
    tv = d["torch_vs_llamacpp_F16"]
    tvm = m["torch_vs_llamacpp_F16"]
    a(f"Logits of the training graph vs llama.cpp on the F16 files (one held-out window): max |diff| / std "
      f"{tv['max_diff_over_std']} (dense), {tvm['max_diff_over_std']} (MoE); argmax agreement "
      f"{tv['argmax_agree']:.3f} / {tvm['argmax_agree']:.3f}.\n")
    a("edge_rt vs llama.cpp on `default.gguf` (held-out snippets, max |diff| / std of the logits): " +
      ", ".join(f"{x['length']} tokens {x['max_diff_over_std']}" for x in d["edge_rt_parity"] if "length" in x) +
      ". The MoE model runs in llama.cpp only until edge_rt's engine supports MoE.\n")
    dj = json.loads((ROOT / "edge_rt" / "models" / "default.json").read_text())
    a(f"The tests (`tests/test_default_models.py`) use a shorter check stored in `default.json`: "
      f"{len(dj['short_check']['windows'])} of these windows, perplexity {dj['short_check']['ppl_llamacpp_q8_0']} "
      "(llama.cpp, Q8_0), which edge_rt and llama.cpp must reproduce within 2%.\n")
    a("The two models are not a like-for-like comparison: the MoE model saw more tokens "
      f"({tm['tokens_seen']:,} vs {td['tokens_seen']:,}) and has more parameters in total, fewer active.\n")
    a("## MoE expert usage on held-out text\n")
    a("Per layer, over all held-out evaluation tokens: the entropy of the distribution of top-2 selections over "
      "the 8 experts (3 bits = perfectly balanced, 0 = collapsed onto one expert), and the mean entropy of the "
      "router's per-token softmax (3 bits = uniform noise, i.e. no preference; low = decisive routing).\n")
    a("| layer | usage entropy (bits) | mean per-token router entropy (bits) | usage share per expert |\n| --- | --- | --- | --- |")
    for layer in m["routing"]:
        a(f"| {layer['layer']} | {layer['usage_entropy_bits']} | {layer['router_entropy_bits']} | "
          + " ".join(f"{x:.3f}" for x in layer["usage"]) + " |")
    a("")
    a("## Sample completions\n")
    a("llama.cpp, 48 tokens, temperature 0.8 (seeds 1 and 2, no top-k/top-p) and greedy. A prompt ending in a "
      "space is tokenized with the space as its own token (GPT-2 pre-tokenization), which the model rarely saw "
      "before a word, so some completions start with a second space.\n")
    for name, e, key in (("dense, Q8_0 (default.gguf)", d, "samples_Q8_0"), ("MoE, F16", m, "samples_F16")):
        a(f"### {name}\n")
        for prompt, outs in e[key].items():
            for i, o in enumerate(outs):
                label = "greedy" if i == 2 else f"seed {i + 1}"
                a(f"`{prompt!r}`, {label}:\n")
                a("```python\n" + (prompt + o).replace("```", "` ` `") + "\n```\n")
    a("## Reproduce\n")
    a("```sh\npip install torch==2.13.0 tokenizers   # dev-only\nnice -n 19 python3 tools/train_tiny_models.py --parallel\n```\n")
    a("It writes the split (`SPLIT.md`), the three GGUF files, `default.json`, the reports and this card; "
      "intermediate files go to `build/tiny_models/`. Stages can be run alone with `--stages` (corpus, "
      "tokenizer, dense, moe, export, verify, card). The corpus is the running Python's standard library, so "
      f"another Python version gives another (equally valid) model; these were made with Python {c['python']}. "
      "Tests: `tests/test_default_models.py`.")
    (ROOT / "edge_rt" / "models" / "README.md").write_text("\n".join(L) + "\n")
    log("card: edge_rt/models/README.md written")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "build" / "tiny_models"))
    ap.add_argument("--parallel", action="store_true",
                    help="train the two models side by side, one single-threaded process each")
    ap.add_argument("--stages", default="corpus,tokenizer,dense,moe,export,verify,card")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = a.stages.split(",")
    t0 = time.time()
    if "corpus" in stages or "tokenizer" in stages:
        train, held = stage_corpus(work)
        if "tokenizer" in stages:
            stage_tokenizer(work, train, held)
    train_stages = [w for w in ("dense", "moe") if w in stages]
    if a.parallel and len(train_stages) > 1:
        # one process per model, one thread each: on a busy 2-core machine two single-threaded
        # processes lose far less to preemption than one process whose two threads wait on each other
        import subprocess
        env = dict(os.environ, TRAIN_THREADS="1")
        procs = [subprocess.Popen([sys.executable, __file__, "--work", str(work), "--stages", w], env=env,
                                  stdout=open(work / f"{w}.log", "w"), stderr=subprocess.STDOUT)
                 for w in train_stages]
        if any(p.wait() for p in procs):
            raise SystemExit("training failed, see " + str(work))
    else:
        for which in train_stages:
            stage_train(work, which)
    if "export" in stages:
        stage_export(work)
    if "verify" in stages:
        stage_verify(work)
    if "card" in stages:
        stage_card(work)
    log(f"all stages done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
