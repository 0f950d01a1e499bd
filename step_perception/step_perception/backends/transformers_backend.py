"""In-process transformers backend: a smaller model hosted on the robot or workstation itself.

``AutoProcessor`` + ``AutoModelForImageTextToText`` (falling back to
``AutoModelForCausalLM``, with ``trust_remote_code`` when the config allows it,
as Step-3.7-Flash's card uses), ``device_map="auto"`` when accelerate and CUDA
are there, bf16 on GPU and fp32 on CPU, optional 8-bit/4-bit loading through
bitsandbytes, greedy decoding under ``torch.inference_mode``.

Loading and generation run on one worker thread of the backend's own: the
constructor and ``submit`` return at once; requests queue behind the load.
torch and transformers are imported on that thread, never at module import.
"""

from __future__ import annotations

import gc
import importlib
import io
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from step_perception.core.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigError,
)
from step_perception.core.parsing import strip_reasoning
from step_perception.core.types import (
    BackendHealth,
    ModelReply,
    ModelRequest,
    PreparedImage,
    TokenUsage,
)

__all__ = ["TransformersBackend", "TransformersBackendConfig"]

_log = logging.getLogger(__name__)

_DTYPES = ("auto", "bfloat16", "float16", "float32")
_QUANTIZATIONS = ("none", "8bit", "4bit")
_THREAD_PREFIX = "transformers-backend"


@dataclass(frozen=True)
class TransformersBackendConfig:
    """Settings of the in-process backend, validated on creation.

    ``model`` is a local folder or a hub id (hub access is the user's
    machine's business). ``device``: ``auto`` (all GPUs through accelerate's
    ``device_map="auto"`` when CUDA is there, else CPU), ``cpu``, ``cuda`` or
    ``cuda:N``. ``dtype``: ``auto`` = bf16 on GPU, fp32 on CPU.
    ``quantization``: ``none``, ``8bit`` or ``4bit`` (needs CUDA and
    bitsandbytes). ``trust_remote_code`` runs the model folder's own Python.
    """

    model: str
    device: str = "auto"
    dtype: str = "auto"
    quantization: str = "none"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must name a local folder or a hub id")
        if self.device not in ("auto", "cpu", "cuda") and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.quantization not in _QUANTIZATIONS:
            raise ConfigError(
                f"quantization must be one of {_QUANTIZATIONS}, got {self.quantization!r}"
            )
        if self.quantization != "none" and self.device == "cpu":
            raise ConfigError(f"quantization {self.quantization!r} needs a CUDA device, not cpu")


def _decode_image(image: PreparedImage) -> Any:
    """Decode the sent bytes to an RGB picture the processor takes (PIL, else numpy)."""
    try:
        from PIL import Image
    except ImportError:
        import cv2
        import numpy as np

        bgr = cv2.imdecode(np.frombuffer(image.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BackendError(
                f"cannot decode the {image.mime} image ({len(image.data)} bytes)"
            ) from None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        with Image.open(io.BytesIO(image.data)) as pic:
            return pic.convert("RGB")
    except Exception as err:
        raise BackendError(
            f"cannot decode the {image.mime} image ({len(image.data)} bytes): {err}"
        ) from err


class TransformersBackend:
    """Backend running a transformers model in this process (see the module doc)."""

    def __init__(self, config: TransformersBackendConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._closed = False
        self._state = "loading"
        self._detail = f"loading {config.model}"
        self._model: Any = None
        self._processor: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_PREFIX)
        self._loaded: Future[None] = self._pool.submit(self._load)

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self._config.model!r}, state={self._state!r})"

    @property
    def name(self) -> str:
        """``transformers`` (the model is in each reply's endpoint)."""
        return "transformers"

    @property
    def config(self) -> TransformersBackendConfig:
        """The validated settings."""
        return self._config

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raise the load's BackendError if it failed."""
        self._loaded.result(timeout=timeout)

    def submit(self, request: ModelRequest) -> Future[ModelReply]:
        """Queue ``request`` behind the load and earlier requests; returns at once."""
        started = time.monotonic()
        with self._lock:
            if not self._closed:
                return self._pool.submit(self._generate, request, started)
        failed: Future[ModelReply] = Future()
        failed.set_exception(BackendUnavailableError("transformers backend is closed"))
        return failed

    def health(self) -> BackendHealth:
        """Report ``loading``, ``loaded``, ``failed`` or ``closed`` (no work done)."""
        with self._lock:
            return BackendHealth(self._state == "loaded", self._state, self._detail)

    def close(self) -> None:
        """Fail queued requests, free the model (and the CUDA cache). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pool.submit(self._unload)
        # From the worker itself (a done-callback), waiting would deadlock.
        on_worker = threading.current_thread().name.startswith(_THREAD_PREFIX)
        self._pool.shutdown(wait=not on_worker)

    # -- worker thread ------------------------------------------------------

    def _set_state(self, state: str, detail: str) -> None:
        with self._lock:
            self._state, self._detail = state, detail

    def _load(self) -> None:
        cfg = self._config
        try:
            self._model, self._processor, where = self._load_model()
        except Exception as err:
            msg = f"cannot load model {cfg.model!r}: {type(err).__name__}: {err}"
            self._set_state("failed", msg)
            _log.error("%s", msg)
            if isinstance(err, BackendError):
                raise
            raise BackendUnavailableError(msg) from err
        self._set_state("loaded", f"{cfg.model} on {where}")
        _log.info("loaded %s on %s", cfg.model, where)

    def _load_model(self) -> tuple[Any, Any, str]:
        import torch

        # Untyped for mypy: transformers' stubs are partial and its calls are dynamic anyway.
        transformers: Any = importlib.import_module("transformers")

        cfg = self._config
        cuda = torch.cuda.is_available()
        if cfg.device.startswith("cuda") and not cuda:
            raise ConfigError(f"device {cfg.device!r} asked for, but CUDA is not available")
        on_gpu = cuda and cfg.device != "cpu"
        if cfg.dtype == "auto":
            dtype = torch.bfloat16 if on_gpu else torch.float32
        else:
            dtype = getattr(torch, cfg.dtype)
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
        device_map: str | None = None
        if on_gpu and cfg.device in ("auto", "cuda"):
            try:
                import accelerate  # noqa: F401

                device_map = "auto"
            except ImportError:
                device_map = None
        if cfg.quantization != "none":
            if not on_gpu:
                raise ConfigError(f"quantization {cfg.quantization!r} needs CUDA")
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as err:
                raise ConfigError(
                    f"quantization {cfg.quantization!r} needs bitsandbytes, which is not installed"
                ) from err
            if cfg.quantization == "8bit":
                quant = transformers.BitsAndBytesConfig(load_in_8bit=True)
            else:
                quant = transformers.BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4"
                )
            kwargs["quantization_config"] = quant
            device_map = device_map or (cfg.device if cfg.device != "auto" else "auto")
        if device_map is not None:
            kwargs["device_map"] = device_map

        processor = transformers.AutoProcessor.from_pretrained(
            cfg.model, trust_remote_code=cfg.trust_remote_code
        )
        try:
            model = transformers.AutoModelForImageTextToText.from_pretrained(cfg.model, **kwargs)
        except (ValueError, KeyError) as err:
            # Not an image-text-to-text architecture transformers knows: the model's own
            # code may register it as a causal LM (Step-3.7-Flash does).
            _log.info(
                "AutoModelForImageTextToText refused %s (%s); trying AutoModelForCausalLM",
                cfg.model,
                err,
            )
            model = transformers.AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
        if device_map is None:
            target = "cuda" if on_gpu and cfg.device == "auto" else cfg.device
            model = model.to(target)  # the loader's own placement when no device_map
        model.eval()
        where = f"{model.device} ({str(dtype).removeprefix('torch.')}"
        where += f", device_map={device_map})" if device_map else ")"
        if cfg.quantization != "none":
            where += f" {cfg.quantization}"
        return model, processor, where

    def _unload(self) -> None:
        cuda = self._model is not None and getattr(self._model.device, "type", "") == "cuda"
        self._model = None
        self._processor = None
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()
        self._set_state("closed", "backend closed")

    def _generate(self, request: ModelRequest, started: float) -> ModelReply:
        if self._closed:
            raise BackendUnavailableError("transformers backend is closed")
        if self._model is None:
            with self._lock:
                detail = self._detail
            raise BackendUnavailableError(f"model not loaded: {detail}")
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise BackendTimeoutError("request deadline passed while queued for the model")
        import torch

        picture = _decode_image(request.image)
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": request.system}]}
            )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": picture},
                    {"type": "text", "text": request.user},
                ],
            }
        )
        model, processor = self._model, self._processor
        try:
            inputs = processor.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
            inputs = inputs.to(model.device)
            for key, value in inputs.items():
                if torch.is_floating_point(value):
                    inputs[key] = value.to(model.dtype)
        except Exception as err:
            raise BackendError(
                f"cannot build the model input: {type(err).__name__}: {err}"
            ) from err
        sampling = request.sampling
        gen: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "do_sample": sampling.temperature > 0,
        }
        if sampling.temperature > 0:
            gen["temperature"] = sampling.temperature
        if request.deadline is not None:
            gen["max_time"] = max(0.01, request.deadline - time.monotonic())
        prompt_len = int(inputs["input_ids"].shape[-1])
        try:
            with torch.inference_mode():
                out = model.generate(**inputs, **gen)
        except Exception as err:
            raise BackendError(f"generation failed: {type(err).__name__}: {err}") from err
        new_tokens = out[0, prompt_len:]
        if request.deadline is not None and time.monotonic() > request.deadline:
            raise BackendTimeoutError(
                f"generation passed the request deadline after {len(new_tokens)} tokens"
            )
        decode = getattr(processor, "decode", None) or processor.tokenizer.decode
        text = decode(new_tokens, skip_special_tokens=True)
        return ModelReply(
            text=strip_reasoning(str(text)),
            latency_s=time.monotonic() - started,
            endpoint=f"transformers:{self._config.model}",
            usage=TokenUsage(prompt_tokens=prompt_len, completion_tokens=int(new_tokens.shape[-1])),
            attempts=1,
        )
