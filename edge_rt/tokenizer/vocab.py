"""GGUF vocabularies: token types and attributes, metadata validation, special tokens.

Metadata is validated like any other input from a file: malformed keys raise
:class:`edge_rt.errors.ModelFormatError` naming the key. Special ids, end-of-generation tokens and
per-token attributes follow llama.cpp's ``llama_vocab::load`` (which recognises end-of-turn and
fill-in-the-middle tokens by their text).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, Type, TypeVar

import numpy as np

from ..errors import InvalidArgumentError, ModelFormatError, UnsupportedArchitectureError
from ..gguf_file import read_metadata
from .pretokenize import PRE_TYPES, PreTokenizer, PreType

__all__ = [
    "Vocabulary", "is_byte_token_text",
    "TOKEN_TYPE_UNDEFINED", "TOKEN_TYPE_NORMAL", "TOKEN_TYPE_UNKNOWN", "TOKEN_TYPE_CONTROL",
    "TOKEN_TYPE_USER_DEFINED", "TOKEN_TYPE_UNUSED", "TOKEN_TYPE_BYTE",
    "ATTR_UNDEFINED", "ATTR_UNKNOWN", "ATTR_UNUSED", "ATTR_NORMAL", "ATTR_CONTROL", "ATTR_USER_DEFINED",
    "ATTR_BYTE", "ATTR_LSTRIP", "ATTR_RSTRIP",
]

# ---- token types (GGUF tokenizer.ggml.token_type) and attributes (llama.cpp llama_token_attr) ----------

TOKEN_TYPE_UNDEFINED = 0
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5
TOKEN_TYPE_BYTE = 6

ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8

_TYPE_TO_ATTR = {
    TOKEN_TYPE_UNKNOWN: ATTR_UNKNOWN,
    TOKEN_TYPE_UNUSED: ATTR_UNUSED,
    TOKEN_TYPE_NORMAL: ATTR_NORMAL,
    TOKEN_TYPE_CONTROL: ATTR_CONTROL,
    TOKEN_TYPE_USER_DEFINED: ATTR_USER_DEFINED,
    TOKEN_TYPE_BYTE: ATTR_BYTE,
}

_KEY_PREFIX = "tokenizer.ggml."


# ---- metadata validation ------------------------------------------------------------------------------

def _err(key: str, what: str) -> ModelFormatError:
    return ModelFormatError(f"[tokenizer] key '{key}': {what}")


def _as_list(md: Mapping[str, Any], key: str) -> Optional[list]:
    if key not in md:
        return None
    value = md[key]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise _err(key, f"expected an array, got {type(value).__name__}")
    return list(value)


def _as_str(md: Mapping[str, Any], key: str, default: Optional[str] = None) -> Optional[str]:
    if key not in md:
        return default
    value = md[key]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _err(key, "string is not valid UTF-8") from None
    if not isinstance(value, str):
        raise _err(key, f"expected a string, got {type(value).__name__}")
    return value


def _as_bool(md: Mapping[str, Any], key: str, default: bool) -> bool:
    if key not in md:
        return default
    value = md[key]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise _err(key, f"expected a bool, got {type(value).__name__}")


def _as_id(md: Mapping[str, Any], key: str) -> Optional[int]:
    if key not in md:
        return None
    value = md[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _err(key, f"expected an integer token id, got {type(value).__name__}")
    return int(value)


def _strings(values: list, key: str) -> List[str]:
    out: List[str] = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            try:  # the reader keeps undecodable bytes as surrogate escapes; the tokenizer needs text
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise _err(key, f"entry {i} is not valid UTF-8") from None
            out.append(v)
        elif isinstance(v, bytes):
            try:
                out.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                raise _err(key, f"entry {i} is not valid UTF-8") from None
        else:
            raise _err(key, f"entry {i} is {type(v).__name__}, expected str")
    return out


# ---- special tokens, by text (llama.cpp llama_vocab::load) -------------------------------------------

_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
))


def is_byte_token_text(text: str) -> bool:
    """True for texts of the form ``<0xXX>`` (a byte token)."""
    return (len(text) == 6 and text.startswith("<0x") and text.endswith(">")
            and all(c in "0123456789abcdefABCDEF" for c in text[3:5]))


V = TypeVar("V", bound="Vocabulary")


class Vocabulary:
    """A GGUF vocabulary: token texts, scores and attributes, BPE merges, the pre-tokenizer, special ids
    and the add-BOS/EOS flags, validated from metadata as llama.cpp's ``llama_vocab::load`` reads them.

    Build it with :meth:`from_gguf` / :meth:`from_metadata`; :class:`edge_rt.tokenizer.Tokenizer` adds
    tokenize / detokenize. Read-only after construction.
    """

    def __init__(self) -> None:  # use from_gguf / from_metadata
        self.model: str = ""
        self.pre: str = ""
        self._texts: List[str] = []
        self._scores: List[float] = []
        self._attrs: List[int] = []
        self._ids: Dict[str, int] = {}
        self._ranks: Dict[Tuple[str, str], int] = {}
        self._pre: Optional[PreTokenizer] = None
        #: the pre-tokenizer settings of a gpt2 (BPE) vocabulary; None for SPM
        self.pre_type: Optional[PreType] = None
        self._ignore_merges = False
        self.add_space_prefix = False
        self.add_bos = False
        self.add_eos = False
        self.bos_id: Optional[int] = None
        self.eos_id: Optional[int] = None
        self.eot_id: Optional[int] = None
        self.eom_id: Optional[int] = None
        self.unk_id: Optional[int] = None
        self.pad_id: Optional[int] = None
        self.eog_ids: FrozenSet[int] = frozenset()
        self.fim_ids: Dict[str, Optional[int]] = {}
        self._special_cache: List[int] = []

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls: Type[V], path: Any) -> V:
        """Load the vocabulary of a GGUF file (tensor data is never read)."""
        return cls.from_metadata(read_metadata(path))

    @classmethod
    def from_metadata(cls: Type[V], metadata: Mapping[str, Any]) -> V:
        """Build a tokenizer from GGUF metadata (key -> int/float/bool/str/list), validating every key."""
        md = metadata
        self = cls()
        k_model = _KEY_PREFIX + "model"
        model = _as_str(md, k_model)
        if model is None:
            raise _err(k_model, "missing")
        if model not in ("llama", "gpt2"):
            raise UnsupportedArchitectureError(
                f"[tokenizer] key '{k_model}': tokenizer model '{model}' is not supported "
                f"(edge_rt supports 'llama' and 'gpt2')")
        self.model = model
        is_spm = model == "llama"

        # tokens
        k_tokens = _KEY_PREFIX + "tokens"
        raw_tokens = _as_list(md, k_tokens)
        if raw_tokens is None:
            raise _err(k_tokens, "missing")
        if not raw_tokens:
            raise _err(k_tokens, "empty vocabulary")
        texts = _strings(raw_tokens, k_tokens)
        n = len(texts)
        ids: Dict[str, int] = {}
        for i, t in enumerate(texts):
            if not t:
                t = texts[i] = f"[EMPTY_{i}]"
            prev = ids.setdefault(t, i)
            if prev != i:
                raise _err(k_tokens, f"duplicate token {t!r} at ids {prev} and {i}")

        # scores
        k_scores = _KEY_PREFIX + "scores"
        raw_scores = _as_list(md, k_scores)
        if raw_scores is None:
            scores = [0.0] * n
        else:
            if len(raw_scores) != n:
                raise _err(k_scores, f"length {len(raw_scores)} != {n} tokens")
            for i, s in enumerate(raw_scores):
                if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, float, np.integer, np.floating)):
                    raise _err(k_scores, f"entry {i} is {type(s).__name__}, expected float")
            # llama.cpp keeps scores as float32; round so ties and orderings are the same
            scores = np.asarray(raw_scores, dtype=np.float64).astype(np.float32).tolist()

        # token types
        k_types = _KEY_PREFIX + "token_type"
        raw_types = _as_list(md, k_types)
        if raw_types is None:
            attrs = [ATTR_NORMAL] * n
        else:
            if len(raw_types) != n:
                raise _err(k_types, f"length {len(raw_types)} != {n} tokens")
            attrs = []
            for i, t in enumerate(raw_types):
                if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
                    raise _err(k_types, f"entry {i} is {type(t).__name__}, expected int")
                attrs.append(_TYPE_TO_ATTR.get(int(t), ATTR_UNDEFINED))
        for i, a in enumerate(attrs):
            if a & ATTR_BYTE and not is_byte_token_text(texts[i]):
                raise _err(k_types, f"token {i} ({texts[i]!r}) has type BYTE but is not of the form <0xXX>")

        # pre-tokenizer and merges
        pre = _as_str(md, _KEY_PREFIX + "pre", "") or ""
        self.pre = pre
        add_bos_default = is_spm
        if not is_spm:
            entry = PRE_TYPES.get(pre)
            if entry is None:
                # As llama.cpp: another splitter would tokenize differently without saying so.
                known = ", ".join(sorted(n for n in PRE_TYPES if n))
                raise UnsupportedArchitectureError(
                    f"[tokenizer] unknown pre-tokenizer '{pre}' (key '{_KEY_PREFIX}pre'); supported: {known}")
            elif pre == "":
                warnings.warn(f"edge_rt tokenizer: missing '{_KEY_PREFIX}pre', using 'default' "
                              f"(generation quality may be degraded)", stacklevel=2)
            self.pre_type = entry
            self._ignore_merges, add_bos_default = entry.ignore_merges, entry.add_bos
            self._pre = PreTokenizer(entry.regexes)

            k_merges = _KEY_PREFIX + "merges"
            raw_merges = _as_list(md, k_merges)
            if raw_merges is None:
                if not entry.merges_optional:
                    raise _err(k_merges, "missing (required by the gpt2 tokenizer model)")
                raw_merges = []  # kimi-k2: llama.cpp then merges nothing
            merges = _strings(raw_merges, k_merges)
            ranks: Dict[Tuple[str, str], int] = {}
            for i, m in enumerate(merges):
                sep = m.find(" ", 1)
                if sep <= 0 or sep == len(m) - 1 or m.find(" ", sep + 1) != -1:
                    raise _err(k_merges, f"entry {i} {m!r} is not two pieces separated by one space")
                ranks.setdefault((m[:sep], m[sep + 1:]), i)
            self._ranks = ranks

        self._texts, self._scores, self._attrs, self._ids = texts, scores, attrs, ids

        # special ids: defaults per model, then keys; out-of-range defaults are disabled
        def default(v: Optional[int]) -> Optional[int]:
            return v if v is not None and 0 <= v < n else None

        no_bos = self.pre_type is not None and self.pre_type.bos_is_null  # chatglm-bpe, glm4, glm5
        self.bos_id = default(1 if is_spm else None if no_bos else 11)
        self.eos_id = default(2 if is_spm else 11)
        self.unk_id = default(0 if is_spm else None)
        special: Dict[str, Optional[int]] = {"eot": None, "eom": None, "pad": None,
                                             **{k: None for k in _FIM_TEXTS}}
        for name in ("bos", "eos"):
            key = f"{_KEY_PREFIX}{name}_token_id"
            v = _as_id(md, key)
            if v is not None:
                if not 0 <= v < n:
                    raise _err(key, f"token id {v} is outside the vocabulary (0..{n - 1})")
                setattr(self, f"{name}_id", v)
        optional_keys = {"unk": "unknown_token_id", "eot": "eot_token_id", "eom": "eom_token_id",
                         "pad": "padding_token_id", "fim_pre": "fim_pre_token_id",
                         "fim_suf": "fim_suf_token_id", "fim_mid": "fim_mid_token_id",
                         "fim_pad": "fim_pad_token_id", "fim_rep": "fim_rep_token_id",
                         "fim_sep": "fim_sep_token_id"}
        for name, suffix in optional_keys.items():
            key = _KEY_PREFIX + suffix
            v = _as_id(md, key)
            if v is None:
                continue
            if not 0 <= v < n:
                warnings.warn(f"edge_rt tokenizer: key '{key}' = {v} is outside the vocabulary; ignored",
                              stacklevel=2)
                continue
            if name == "unk":
                self.unk_id = v
            else:
                special[name] = v

        self.add_space_prefix = _as_bool(md, _KEY_PREFIX + "add_space_prefix", is_spm)
        self.add_bos = _as_bool(md, _KEY_PREFIX + "add_bos_token", add_bos_default)
        if self.pre_type is not None and self.pre_type.force_bos:
            self.add_bos = True  # llama.cpp overrides the key for gemma4
        self.add_eos = _as_bool(md, _KEY_PREFIX + "add_eos_token", False)
        if self.add_bos and self.bos_id is None:
            raise _err(_KEY_PREFIX + "add_bos_token", f"true, but '{_KEY_PREFIX}bos_token_id' is not set")
        if self.add_eos and self.eos_id is None:
            raise _err(_KEY_PREFIX + "add_eos_token", f"true, but '{_KEY_PREFIX}eos_token_id' is not set")

        # llama.cpp recognises end-of-turn / FIM tokens by their text and forces them to CONTROL
        # (llama.cpp scans an unordered map; we take the first candidate in list order, so a vocabulary
        # with both '<|eot_id|>' and '<|end_of_text|>' gets '<|eot_id|>' as EOT)
        for name, cands in (("eot", _EOT_TEXTS), ("eom", _EOM_TEXTS), *_FIM_TEXTS.items()):
            if special[name] is not None:
                continue
            for t in cands:
                if t in ids:
                    special[name] = ids[t]
                    attrs[ids[t]] |= ATTR_CONTROL
                    break
        eot, eom = special["eot"], special["eom"]
        for i, t in enumerate(texts):
            if attrs[i] & ATTR_CONTROL and "unused" in t:
                attrs[i] |= ATTR_UNUSED
        eog = {special[k] for k in ("fim_pad", "fim_rep", "fim_sep") if special[k] is not None}
        for i, t in enumerate(texts):
            if t in _EOG_TEXTS:
                eog.add(i)
                attrs[i] |= ATTR_CONTROL
        for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):  # gpt-oss
            if t in ids:
                attrs[ids[t]] = ATTR_USER_DEFINED
        for v in (self.eos_id, eot, eom):
            if v is not None:
                eog.add(v)
        eog_texts = {texts[i]: i for i in eog}
        if "<|end|>" in eog_texts and (("<|return|>" in eog_texts and "<|call|>" in eog_texts)
                                       or ("<|calls|>" in eog_texts and "<|flush|>" in eog_texts)):
            eog.discard(eog_texts["<|end|>"])
            attrs[eog_texts["<|end|>"]] = ATTR_USER_DEFINED
        if "<|tool_response>" in eog_texts and "</s>" in eog_texts:
            eog.discard(eog_texts["</s>"])
            attrs[eog_texts["</s>"]] = ATTR_NORMAL
        self.eot_id, self.eom_id, self.pad_id = eot, eom, special["pad"]
        self.fim_ids = {k: special[k] for k in _FIM_TEXTS}
        self.eog_ids = frozenset(eog)

        cache = [i for i, a in enumerate(attrs) if a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)]
        cache.sort(key=lambda i: -len(texts[i].encode("utf-8")))
        self._special_cache = cache

        # per-token strip attributes llama.cpp sets by model name (phi-3)
        name = _as_str(md, "general.name", "") or ""
        if "phi-3" in name.lower() or "phi3" in name.lower():
            for i in cache:
                attrs[i] |= ATTR_RSTRIP
            if "</s>" in ids:
                attrs[ids["</s>"]] |= ATTR_RSTRIP
            for t in ("<unk>", "<s>", "<|endoftext|>"):
                if t in ids:
                    attrs[ids[t]] &= ~ATTR_RSTRIP
        return self

    # -- vocabulary queries --------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model!r}, pre={self.pre!r}, n_vocab={self.n_vocab}, "
                f"bos_id={self.bos_id}, eos_id={self.eos_id})")

    def _check_id(self, token_id: int) -> int:
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise InvalidArgumentError(f"[tokenizer] token id must be an int, got {type(token_id).__name__}")
        token_id = int(token_id)
        if not 0 <= token_id < len(self._texts):
            raise InvalidArgumentError(
                f"[tokenizer] token id {token_id} is outside the vocabulary (0..{len(self._texts) - 1})")
        return token_id

    def token_text(self, token_id: int) -> str:
        """The raw vocabulary entry (e.g. '▁Hello', 'Ġworld', '<0x0A>')."""
        return self._texts[self._check_id(token_id)]

    def token_score(self, token_id: int) -> float:
        return self._scores[self._check_id(token_id)]

    def token_attr(self, token_id: int) -> int:
        """llama.cpp token attribute bits (the ATTR_* constants of edge_rt.tokenizer)."""
        return self._attrs[self._check_id(token_id)]

    def token_to_id(self, text: str) -> Optional[int]:
        return self._ids.get(text)

    def is_control(self, token_id: int) -> bool:
        return bool(self._attrs[self._check_id(token_id)] & ATTR_CONTROL)

    def is_eog(self, token_id: int) -> bool:
        """True for tokens that end generation (EOS, EOT, EOM and the like)."""
        return token_id in self.eog_ids

    def _byte_to_token(self, b: int) -> int:
        tid = self._ids.get(f"<0x{b:02X}>")
        if tid is None:
            tid = self._ids.get(chr(b)) if b < 0x80 else None
            if tid is None:
                raise ModelFormatError(
                    f"[tokenizer] key '{_KEY_PREFIX}tokens': no byte token <0x{b:02X}> for byte fallback")
        return tid
