"""The vLLM engine (GPU): batched rounds, or step by step when `streaming` is set."""

from __future__ import annotations

from collections.abc import Hashable

from scdpo.generation.backends import Completion, Request
from scdpo.gpu import preflight
from scdpo.modeling import has_remote_code
from scdpo.solution import END_OF_BLOCK, END_OF_MESSAGE
from scdpo.tokens import leading_special_ids, prompt_ids


class VLLMBackend:
    """vLLM's offline engine, with automatic prefix caching (continuations from split points, and
    every next block of a solution, share long prefixes).

    Not run here: there is no GPU in CI and vllm is not installed in the test environment (it
    would pull a CUDA torch). Written against vLLM 0.33's public API (`LLM`, `SamplingParams`,
    `TokensPrompt`, `CompletionOutput.token_ids/finish_reason`); see docs/generation.md.

    The completion is decoded here from the token ids, exactly as the transformers backend does,
    so both engines hand the loop the same text for the same tokens. The stop marker is read off
    the last token: vLLM reports `<|endofmessage|>` (the model's EOS) with `stop_reason=None`.
    """

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ) -> None:
        preflight("vLLM generation", vllm=True)  # the driver against the CUDA builds, first
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            trust_remote_code=has_remote_code(model_path),
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=True,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.leading = leading_special_ids(self.tokenizer)  # BOS, the same for every prompt
        self.stop_ids = {
            self.tokenizer.convert_tokens_to_ids(END_OF_BLOCK): END_OF_BLOCK,
            self.tokenizer.convert_tokens_to_ids(END_OF_MESSAGE): END_OF_MESSAGE,
        }

    def count_tokens(self, text: str) -> int:
        return len(prompt_ids(self.tokenizer, text, self.leading))

    def _inputs(self, request: Request, max_new_tokens: int, **extra):
        from vllm import SamplingParams, TokensPrompt

        ids = prompt_ids(self.tokenizer, request.prompt, self.leading)
        params = SamplingParams(
            temperature=request.temperature,  # 0: greedy
            seed=request.seed,
            max_tokens=max_new_tokens,
            stop_token_ids=list(self.stop_ids),
            detokenize=False,  # decoded below, as the transformers backend does
            **extra,
        )
        return TokensPrompt(prompt_token_ids=ids), params

    def _completion(self, sample) -> Completion:
        ids = list(sample.token_ids)
        stop = self.stop_ids.get(ids[-1]) if ids and sample.finish_reason == "stop" else None
        kept = ids[:-1] if stop is not None else ids
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        return Completion(text, stop, len(ids))

    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        inputs = [self._inputs(r, max_new_tokens) for r in requests]
        outputs = self.llm.generate(
            [prompt for prompt, _ in inputs], [params for _, params in inputs], use_tqdm=False
        )
        return [self._completion(output.outputs[0]) for output in outputs]


class VLLMStreamingBackend(VLLMBackend):
    """Opt-in (`backend: {engine: vllm, streaming: true}`), untested: the frontier loop adds each
    request to vLLM's engine as soon as it is ready and steps the engine, so a round never waits
    for its slowest row (`LLMEngine.add_request` / `step`, outputs only when finished)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keys: dict[str, Hashable] = {}
        self.next_id = 0

    def add(self, key: Hashable, request: Request, max_new_tokens: int) -> None:
        from vllm.sampling_params import RequestOutputKind

        prompt, params = self._inputs(
            request, max_new_tokens, output_kind=RequestOutputKind.FINAL_ONLY
        )
        request_id, self.next_id = str(self.next_id), self.next_id + 1
        self.keys[request_id] = key
        self.llm.llm_engine.add_request(request_id, prompt, params)

    def step(self) -> list[tuple[Hashable, Completion]]:
        return [
            (self.keys.pop(output.request_id), self._completion(output.outputs[0]))
            for output in self.llm.llm_engine.step()
            if output.finished
        ]
