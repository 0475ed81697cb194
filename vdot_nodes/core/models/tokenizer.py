"""The text encoder's tokenizer, rebuilt offline from what travels with the weights.

ComfyUI's ``umt5_xxl_*.safetensors`` carry the SentencePiece model as a ``spiece_model`` uint8 tensor;
files :func:`save_text_encoder` writes from a vocabulary-list tokenizer (the tiny one) carry the
``vdot_tokenizer_vocab`` metadata entry; diffusers / HF folders have ``tokenizer/``. All become the same
transformers ``T5Tokenizer``, with the same ids as sentencepiece. Nothing is downloaded.
"""

from __future__ import annotations

import json

from ..errors import VDOTInputError
from .checkpoint import EXAMPLE_FILES, Checkpoint
from .convert.umt5 import TOKENIZER_TENSOR
from .files import TensorReader

VOCAB_METADATA = "vdot_tokenizer_vocab"


def tokenizer_from_spiece(model_bytes: bytes):
    """A transformers ``T5Tokenizer`` built offline from SentencePiece model bytes, same ids as sentencepiece.

    Pieces and scores come from ``sentencepiece``; the normaliser (precompiled NFKC map) and the
    byte-fallback flag are read from the model proto so that, e.g., full-width text maps the same.
    """
    import sentencepiece
    from tokenizers.models import Unigram
    from transformers import T5Tokenizer

    sp = sentencepiece.SentencePieceProcessor(model_proto=bytes(model_bytes))
    pieces = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    charsmap, byte_fallback = spiece_normaliser(bytes(model_bytes))
    if min(sp.pad_id(), sp.eos_id(), sp.unk_id()) < 0:
        raise ValueError("the SentencePiece model defines no <pad>/</s>/<unk> piece; it is not a T5 tokenizer")
    tok = T5Tokenizer(
        vocab=pieces, extra_ids=0, _spm_precompiled_charsmap=charsmap,
        pad_token=sp.id_to_piece(sp.pad_id()), eos_token=sp.id_to_piece(sp.eos_id()), unk_token=sp.id_to_piece(sp.unk_id()),
    )
    if byte_fallback or sp.unk_id() != 2:  # T5Tokenizer assumes unk id 2 and no byte fallback
        tok.backend_tokenizer.model = Unigram(pieces, unk_id=sp.unk_id(), byte_fallback=byte_fallback)
    vocab = tok.get_vocab()
    wrong = [(p, i, vocab.get(p)) for i, (p, _) in enumerate(pieces) if vocab.get(p) != i]
    if wrong:
        raise ValueError(f"tokenizer ids differ from SentencePiece ids, e.g. (piece, sp id, tokenizer id) {wrong[:3]}")
    tok.vdot_spiece_model = bytes(model_bytes)
    return tok



def tokenizer_from_vocab(pieces) -> object:
    """A ``T5Tokenizer`` from ``[(piece, score), ...]`` in id order (the ``vdot_tokenizer_vocab`` entry)."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=[tuple(p) for p in pieces], extra_ids=0)


def checkpoint_tokenizer(ckpt: Checkpoint, input_name: str):
    """The tokenizer that travels with a text-encoder checkpoint (a single file or a folder)."""
    if ckpt.folder_config is None:  # single file
        if TOKENIZER_TENSOR in ckpt.header:
            with TensorReader() as reader:
                data = reader.read(*ckpt.location[TOKENIZER_TENSOR]).numpy().tobytes()
            return _guard(lambda: tokenizer_from_spiece(data), input_name, f"{ckpt.name}: spiece_model")
        if VOCAB_METADATA in ckpt.metadata:
            return tokenizer_from_vocab(json.loads(ckpt.metadata[VOCAB_METADATA]))
        raise VDOTInputError(
            input_name, f"{ckpt.name} holds no tokenizer (no spiece_model tensor)",
            f"use a file that includes it such as {EXAMPLE_FILES['text_encoder']}, or a diffusers folder with tokenizer/",
        )
    for folder in (ckpt.path.parent / "tokenizer", ckpt.path):
        if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if (folder / "spiece.model").is_file():
            return tokenizer_from_spiece((folder / "spiece.model").read_bytes())
    raise VDOTInputError(
        input_name, f"no tokenizer next to {ckpt.path} (looked in ../tokenizer and the folder itself)",
        "give the diffusers pipeline root, which has tokenizer/",
    )


def tokenizer_vocab(tokenizer) -> list[list]:
    """``[[piece, score], ...]`` of a Unigram (T5) tokenizer, in id order."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "Unigram":
        raise TypeError(f"save_text_encoder needs a Unigram (T5/UMT5) tokenizer, got {model.get('type')}")
    return [[p, float(s)] for p, s in model["vocab"]]


def _guard(fn, input_name: str, what: str):
    try:
        return fn()
    except (ValueError, RuntimeError, OSError) as e:
        raise VDOTInputError(input_name, f"{what} is not a usable SentencePiece model ({e})", "use the original file") from None


def spiece_normaliser(proto: bytes) -> tuple[bytes | None, bool]:
    """``(precompiled_charsmap, byte_fallback)`` from a SentencePiece ModelProto, read off the wire format.

    ModelProto: trainer_spec = field 2 (byte_fallback = field 35), normalizer_spec = field 3
    (precompiled_charsmap = field 2). Reading two fields does not need protobuf installed.
    """
    charsmap, byte_fallback = None, False
    for num, wire, val in proto_fields(proto):
        if num == 3 and wire == 2:
            for n2, w2, v2 in proto_fields(val):
                if n2 == 2 and w2 == 2:
                    charsmap = bytes(v2) or None
        elif num == 2 and wire == 2:
            for n2, w2, v2 in proto_fields(val):
                if n2 == 35 and w2 == 0:
                    byte_fallback = bool(v2)
    return charsmap, byte_fallback


def proto_fields(buf: bytes):
    def varint(i):
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, i
            shift += 7

    i = 0
    while i < len(buf):
        tag, i = varint(i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            val, i = varint(i)
        elif wire == 1:
            val, i = buf[i : i + 8], i + 8
        elif wire == 5:
            val, i = buf[i : i + 4], i + 4
        elif wire == 2:
            n, i = varint(i)
            val, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield num, wire, val

