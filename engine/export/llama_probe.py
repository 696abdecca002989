"""llama.cpp's side of a GGUF export, in a process of its own: quantize, and load + answer for the check.

A bad GGUF can abort llama.cpp itself (a tokenizer it misreads ends in `std::out_of_range` and
SIGABRT), which would take the export down with it; here it ends this process only, and the export
names the failure. Reads one JSON request (a file), prints one JSON object on its last line.

    python -m engine.export.llama_probe quantize IN.gguf OUT.gguf q4_k_m
    python -m engine.export.llama_probe check REQUEST.json
"""

from __future__ import annotations

import json
import os
import sys
import time

# llama.cpp's file types (llama.h: enum llama_ftype) for the k-quants the converter cannot write.
FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q8_0": 7}


def _threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 2))


def quantize(source: str, target: str, gguf_type: str) -> dict:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[gguf_type]
    params.nthread = _threads()
    started = time.monotonic()
    code = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if code != 0:
        return {"error": f"llama.cpp's quantizer returned {code} for {gguf_type}"}
    return {"path": target, "seconds": round(time.monotonic() - started, 1)}


def _metadata(llm) -> dict:
    keys = ("general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token", "general.file_type")
    return {key: llm.metadata.get(key) for key in keys if key in llm.metadata}


def check(request: dict) -> dict:
    """Tokenize each prompt text, answer it greedily, and give the top-1 token at every position of
    the reference sequence (teacher forcing), all with llama.cpp."""
    import numpy as np
    from llama_cpp import Llama

    prompts: list[str] = request["prompts"]
    references: list[list[int]] = request["references"]
    stops = set(request["stop_ids"])
    max_new = int(request["max_new_tokens"])
    longest = max([len(r) for r in references] + [1])
    started = time.monotonic()
    llm = Llama(model_path=request["gguf"], n_ctx=max(256, longest + max_new + 16), n_threads=_threads(),
                n_batch=512, logits_all=True, verbose=False, seed=0)
    load_seconds = time.monotonic() - started
    tokenized, answers, texts, top1 = [], [], [], []
    generated, decode_seconds = 0, 0.0
    for prompt, reference in zip(prompts, references):
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        tokenized.append(ids)
        llm.reset()
        llm.eval(ids)
        answer: list[int] = []
        begun = time.monotonic()
        for _ in range(max_new):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if token in stops:
                break
            answer.append(token)
            llm.eval([token])
        decode_seconds += time.monotonic() - begun
        generated += len(answer)
        answers.append(answer)
        texts.append(llm.detokenize(answer).decode("utf-8", errors="replace"))
        llm.reset()
        llm.eval(reference)
        top1.append([int(i) for i in np.argmax(llm.scores[: len(reference)], axis=1)])
    return {
        "load_seconds": round(load_seconds, 2), "tokenized": tokenized, "answers": answers, "answer_texts": texts,
        "top1": top1, "generated_tokens": generated,
        "tokens_per_second": round(generated / decode_seconds, 1) if decode_seconds > 0 else None,
        "metadata": _metadata(llm), "threads": _threads(),
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The JSON line owns stdout; llama.cpp's own logging goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    try:
        if argv[0] == "quantize":
            reply = quantize(argv[1], argv[2], argv[3])
        elif argv[0] == "check":
            with open(argv[1], encoding="utf-8") as handle:
                reply = check(json.load(handle))
        else:
            reply = {"error": f"unknown action {argv[0]!r}"}
    except Exception as exc:
        import traceback

        traceback.print_exc()
        reply = {"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"}
    out.write(json.dumps(reply) + "\n")
    out.flush()
    return 0 if "error" not in reply else 1


if __name__ == "__main__":
    sys.exit(main())
