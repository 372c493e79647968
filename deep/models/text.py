"""Autoregressive LSTM text VAE (He et al. 2019) as a beta-VAE and as an MR-VAE, on Yahoo (paper section 5.2).

Architecture (He et al. 2019; paper-notes 4.2 and 7.10), defaults in brackets:

* Encoder: embedding [256] -> LSTM [256] -> the hidden state at each document's last token (``</s>``)
  -> two Linear heads, ``mu`` and ``log_var`` of the latent [32].
* Decoder: its own embedding [256] with dropout [0.5]; z is concatenated to every input embedding;
  the initial LSTM state comes from z: ``Linear(latent -> 2 * hidden)`` split into ``h0 = tanh(.)`` and
  ``c0``; LSTM [256]; dropout [0.5] on its outputs; ``Linear(hidden -> vocab)``; softmax over the
  vocabulary.  Teacher forcing: input ``<s> w_1 .. w_n``, targets ``w_1 .. w_n </s>``.
* Initialisation (He et al.): every weight ~ U(-0.01, 0.01), embeddings ~ U(-0.1, 0.1) (``init="uniform"``;
  ``init="default"`` keeps PyTorch's); gates keep their own open initialisation.

Padding never counts: the encoder reads the LSTM output at position ``length - 1`` of each document
(a unidirectional LSTM's output there does not depend on later padding), and the token NLL is computed only
at the ``length - 1`` real target positions of each document (the output projection is applied to those
positions only, in chunks when no gradient is needed).

MR-VAE gates (:class:`linvae.conditioning.Gate`, per channel, fed ``u = beta_range.standardize(beta)``):

* encoder (``enc_gate``, default sigmoid): the input embeddings of the LSTM (``embed`` channels) and
  the last hidden state fed to the heads (``hidden`` channels);
* decoder (``dec_gate``, default sqrt): the z -> initial-state projection (``2 hidden``), the LSTM input
  ``[embedding, z]`` (``embed + latent``) and the LSTM outputs fed to the vocabulary projection
  (``hidden``).
* Initialisation: every gate starts open, 0.9 at every beta (the paper's reference code), unless
  ``enc_gate_lambda`` = lambda is set: the encoder's last-state gate then starts as the exact linear-VAE
  encoder response ``lambda / (lambda + beta)`` (paper-notes 2.5; decreasing in beta, half closed at
  ``beta = lambda``), so the posterior depends on beta from the first step (see
  :meth:`linvae.conditioning.Gate.init_linear_vae_response_`
  and docs/yahoo.md: without it the shared encoder sees only the batch-mean beta and the MR-VAE's rate at
  small beta stays that of a beta ~ 1 VAE at the cpu budget).
* Not gated (as in :mod:`deep.models.convnets`): the ``mu`` / ``log_var`` heads and the output logits.  The LSTM's
  own recurrent pre-activations are not gated either (that would need a custom cell and lose cuDNN).

Units: ``rate`` = analytic KL in nats per document; ``distortion`` = token NLL summed over the document's
words and ``</s>``, nats per document.  Perplexity divides by the same token count (words + ``</s>``).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from linvae.conditioning import GATE_KINDS, BetaRange, Gate, as_beta_range

from deep.data.registry import YAHOO_ENC_GATE_LAMBDA
from deep.data.text import (BOS_ID, EOS_ID, PAD_ID, TEXT_SPLITS, YAHOO_FILES, DataIntegrityError,
                        DatasetMissingError, TextBatch, TextOptionError, TextSplit, Vocabulary,
                        YahooDownloadError, load_split)

from .base import MultiRateVAE, RATE_DEFINITION
from .objectives import gaussian_kl, iw_nll

__all__ = [
    "TextVAE", "TextEncoder", "TextDecoder", "TextEncoderOutput", "TextVAEOutput", "TextModelError",
    "TextVocabMismatchError", "build_text_vae", "build", "rebuild", "iw_nll_batch", "perplexity",
    "MODEL_OPTIONS", "DEFAULTS", "DISTORTION_NAME", "YAHOO_ENC_GATE_LAMBDA",
    # re-exported data API (deep.models.registry points "yahoo" at deep.models.text:load_split)
    "load_split", "TextSplit", "TextBatch", "Vocabulary", "TextOptionError", "YahooDownloadError",
    "DatasetMissingError", "DataIntegrityError", "TEXT_SPLITS", "YAHOO_FILES",
]

DISTORTION_NAME = "token_nll"
DISTORTION_TEXT = ("categorical negative log-likelihood of the document's tokens (its words and </s>) "
                   "under the autoregressive decoder, summed over the document (nats per document)")
TOKEN_CONVENTION = ("per-token figures divide by n_tokens = the words plus one </s> per document (the tokens "
                    "the decoder predicts); <s> and padding are not counted")
#: He et al. (2019) sizes: embedding 256, LSTM 256, latent 32, decoder dropout 0.5.
DEFAULTS: dict[str, Any] = {"latent_dim": 32, "embed_dim": 256, "hidden_dim": 256, "dec_dropout_in": 0.5,
                            "dec_dropout_out": 0.5, "init": "uniform", "enc_gate_lambda": None}
#: ``TrainConfig.model_options`` keys accepted by :func:`build` (``dec_dropout`` sets both dropouts).
MODEL_OPTIONS = ("embed_dim", "hidden_dim", "dec_dropout", "dec_dropout_in", "dec_dropout_out", "init",
                 "logit_chunk", "enc_gate_lambda")
INITS = ("uniform", "default")


class TextModelError(ValueError):
    """An invalid text-model configuration (the message names the field and the valid values)."""


class TextVocabMismatchError(ValueError):
    """The data's vocabulary is not the one the model was trained with."""


# ----------------------------------------------------------------------------------------------------
# named outputs
# ----------------------------------------------------------------------------------------------------
class TextEncoderOutput(NamedTuple):
    """Diagonal Gaussian posterior ``q(z|x)``: ``mu``, ``log_var`` of shape ``(B, K)``."""

    mu: torch.Tensor
    log_var: torch.Tensor


class TextVAEOutput(NamedTuple):
    """One-sample forward pass: posterior, the sample ``z`` ``(B, K)``, ``rate`` and ``distortion`` ``(B,)``
    in nats per document, and ``n_tokens`` ``(B,)``: the predicted tokens per document (words + ``</s>``)."""

    mu: torch.Tensor
    log_var: torch.Tensor
    z: torch.Tensor
    rate: torch.Tensor
    distortion: torch.Tensor
    n_tokens: torch.Tensor


# ----------------------------------------------------------------------------------------------------
# encoder and decoder
# ----------------------------------------------------------------------------------------------------
def _gate(features: int, kind: str | None, hidden: Sequence[int]) -> Gate | None:
    return Gate(features, kind, hidden=tuple(hidden), channel_dim=-1) if kind else None


def _apply(gate: Gate | None, x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    return x if gate is None else gate(x, u)


class TextEncoder(nn.Module):
    """``embedding -> [gate] -> LSTM -> last hidden state -> [gate] -> (mu, log_var)``."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int, *,
                 gate_kind: str | None, hyper_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.embed_gate = _gate(embed_dim, gate_kind, hyper_hidden)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.hidden_gate = _gate(hidden_dim, gate_kind, hyper_hidden)
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.log_var = nn.Linear(hidden_dim, latent_dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, u: torch.Tensor | None) -> TextEncoderOutput:
        """``tokens`` ``(B, T)``, ``lengths`` ``(B,)`` (``<s>`` and ``</s>`` included) -> ``(B, K)`` each."""
        e = _apply(self.embed_gate, self.embedding(tokens), u)
        out, _ = self.lstm(e)  # (B, T, H)
        last = out[torch.arange(out.shape[0], device=out.device), lengths.to(out.device) - 1]
        h = _apply(self.hidden_gate, last, u)
        return TextEncoderOutput(self.mu(h), self.log_var(h))


class TextDecoder(nn.Module):
    """Autoregressive LSTM decoder conditioned on z (input concatenation and initial state)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int, *,
                 dropout_in: float, dropout_out: float, gate_kind: str | None,
                 hyper_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout_in = nn.Dropout(dropout_in)
        self.state = nn.Linear(latent_dim, 2 * hidden_dim)
        self.state_gate = _gate(2 * hidden_dim, gate_kind, hyper_hidden)
        self.input_gate = _gate(embed_dim + latent_dim, gate_kind, hyper_hidden)
        self.lstm = nn.LSTM(embed_dim + latent_dim, hidden_dim, batch_first=True)
        self.dropout_out = nn.Dropout(dropout_out)
        self.output_gate = _gate(hidden_dim, gate_kind, hyper_hidden)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def initial_state(self, z: torch.Tensor, u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h0, c0)``, each ``(1, B, H)``: ``h0 = tanh(first half)``, ``c0 = second half`` of the gated
        ``Linear(latent -> 2H)(z)``."""
        s = _apply(self.state_gate, self.state(z), u)
        h0, c0 = s.split(self.hidden_dim, dim=-1)
        return torch.tanh(h0).unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()

    def run(self, inputs: torch.Tensor, z: torch.Tensor, u: torch.Tensor | None,
            state: tuple[torch.Tensor, torch.Tensor] | None = None
            ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """LSTM outputs ``(B, T, H)`` (after dropout and gate, before the vocabulary projection) for input
        tokens ``(B, T)``, and the final state; ``state=None`` starts from z."""
        if state is None:
            state = self.initial_state(z, u)
        e = self.dropout_in(self.embedding(inputs))
        x = torch.cat([e, z.unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=-1)
        out, state = self.lstm(_apply(self.input_gate, x, u), state)
        return _apply(self.output_gate, self.dropout_out(out), u), state


# ----------------------------------------------------------------------------------------------------
# the VAE
# ----------------------------------------------------------------------------------------------------
def _as_batch(x: TextBatch | torch.Tensor) -> TextBatch:
    """A :class:`TextBatch`; a bare ``(B, T)`` token tensor gets lengths = its non-``<pad>`` count."""
    if isinstance(x, TextBatch):
        return x
    if torch.is_tensor(x) and x.dim() == 2 and not x.is_floating_point():
        return TextBatch(x.long(), (x != PAD_ID).sum(dim=1))
    raise TypeError(f"text models take a TextBatch or a (B, T) integer token tensor, got "
                    f"{type(x).__name__}{tuple(x.shape) if torch.is_tensor(x) else ''}")


class TextVAE(MultiRateVAE):
    """LSTM beta-VAE (``mr=False``) or MR-VAE over documents; build it with :func:`build_text_vae`.

    ``model(x, beta) -> TextVAEOutput``; ``encode(x, beta) -> TextEncoderOutput``;
    ``log_likelihood(x, z, beta) -> (B,)``; ``x`` is a :class:`TextBatch` (or a ``(B, T)`` token tensor)
    and ``beta`` a float or ``(B,)`` tensor (ignored by a beta-VAE).
    """

    def __init__(self, vocab_size: int, *, mr: bool, latent_dim: int, embed_dim: int, hidden_dim: int,
                 dec_dropout_in: float, dec_dropout_out: float, beta_range: BetaRange, enc_gate: str,
                 dec_gate: str, hyper_hidden: tuple[int, ...], init: str, vocab_digest: str | None,
                 logit_chunk: int = 4096, enc_gate_lambda: float | None = None) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.is_mr = bool(mr)
        self.latent_dim = int(latent_dim)
        self.beta_range = beta_range
        #: Tokens per chunk of the vocabulary projection when no gradient is needed (memory cap).
        self.logit_chunk = int(logit_chunk)
        self._config = {
            "dataset": "yahoo", "arch": "lstm", "vocab_size": self.vocab_size, "mr": self.is_mr,
            "latent_dim": self.latent_dim, "embed_dim": int(embed_dim), "hidden_dim": int(hidden_dim),
            "dec_dropout_in": float(dec_dropout_in), "dec_dropout_out": float(dec_dropout_out),
            "beta_range": {"a": beta_range.a, "b": beta_range.b}, "enc_gate": enc_gate, "dec_gate": dec_gate,
            "hyper_hidden": list(hyper_hidden), "init": init, "vocab_digest": vocab_digest,
            "enc_gate_lambda": enc_gate_lambda if mr else None,
        }
        self.encoder = TextEncoder(vocab_size, embed_dim, hidden_dim, latent_dim,
                                   gate_kind=enc_gate if mr else None, hyper_hidden=hyper_hidden)
        self.decoder = TextDecoder(vocab_size, embed_dim, hidden_dim, latent_dim, dropout_in=dec_dropout_in,
                                   dropout_out=dec_dropout_out, gate_kind=dec_gate if mr else None,
                                   hyper_hidden=hyper_hidden)
        if init == "uniform":
            self._uniform_init()
        if self.is_mr and enc_gate_lambda is not None:
            self.encoder.hidden_gate.init_linear_vae_response_(float(enc_gate_lambda), beta_range)

    def _uniform_init(self, scale: float = 0.01, embed_scale: float = 0.1) -> None:
        gate_params = {id(p) for g in self.gates() for p in g.parameters()}
        embeds = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        with torch.no_grad():
            for p in self.parameters():
                if id(p) in gate_params:
                    continue
                s = embed_scale if id(p) in embeds else scale
                p.uniform_(-s, s)

    # -- configuration ----------------------------------------------------------------------------------
    def describe(self) -> dict:
        """JSON-able description for result files."""
        c = self._config
        gating = ("encoder (sigmoid): input embeddings, last hidden state; decoder (sqrt): z->state, "
                  "LSTM input [embedding, z], LSTM outputs" if self.is_mr else "none")
        if self.is_mr:
            lam = c.get("enc_gate_lambda")
            gating += ("; every gate initialised open (0.9 at every beta)" if lam is None else
                       f"; last-state gate initialised as the linear-VAE encoder response {lam:g} / ({lam:g} + beta), "
                       "the other gates open (0.9 at every beta)")
        return {"config": self.config, "parameters": sum(p.numel() for p in self.parameters()),
                "gated_channels": self.num_gated_channels, "distortion": DISTORTION_TEXT, "gating": gating,
                "layers": [f"encoder: embedding {c['vocab_size']}x{c['embed_dim']} -> LSTM {c['hidden_dim']} "
                           f"-> last state -> Linear {c['hidden_dim']}->{c['latent_dim']} (mu, log_var)",
                           f"decoder: embedding {c['vocab_size']}x{c['embed_dim']} (dropout "
                           f"{c['dec_dropout_in']}) ++ z -> LSTM {c['hidden_dim']} (state from Linear "
                           f"{c['latent_dim']}->{2 * c['hidden_dim']}) -> dropout {c['dec_dropout_out']} "
                           f"-> Linear {c['hidden_dim']}->{c['vocab_size']}"]}

    def conventions(self) -> dict[str, str]:
        return {"rate": RATE_DEFINITION.replace("per example", "per document"), "distortion": DISTORTION_NAME,
                "distortion_definition": DISTORTION_TEXT,
                "objective": "mean over documents of distortion + beta * rate (token NLL and KL, nats per document)"}

    def _reference(self) -> torch.Tensor:
        return self.decoder.state.weight

    # -- model API --------------------------------------------------------------------------------------
    def encode(self, x: TextBatch | torch.Tensor, beta: torch.Tensor | float) -> TextEncoderOutput:
        """Posterior parameters ``(B, K)`` of the documents ``x``."""
        b = _as_batch(x)
        return self.encoder(b.tokens, b.lengths, self.hyper_input(beta, len(b), self._reference()))

    def token_nll(self, hidden: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """``-sum_t log p(target_t)`` over the first ``counts[b]`` positions of each row, ``(B,)`` nats.

        ``hidden`` ``(B, T, H)`` decoder outputs, ``targets`` ``(B, T)``; only real positions are projected
        to the vocabulary, ``logit_chunk`` tokens at a time when no gradient is needed.
        """
        bsz, steps = targets.shape
        mask = torch.arange(steps, device=targets.device).unsqueeze(0) < counts.to(targets.device).unsqueeze(1)
        flat_h = hidden[mask]
        flat_t = targets[mask]
        rows = torch.arange(bsz, device=targets.device).unsqueeze(1).expand(bsz, steps)[mask]
        chunk = flat_t.shape[0] if torch.is_grad_enabled() or self.logit_chunk < 1 else self.logit_chunk
        nll = hidden.new_zeros(bsz)
        for s in range(0, flat_t.shape[0], max(1, chunk)):
            ce = F.cross_entropy(self.decoder.out(flat_h[s:s + chunk]), flat_t[s:s + chunk], reduction="none")
            nll = nll.index_add(0, rows[s:s + chunk], ce)
        return nll

    def _log_likelihood(self, b: TextBatch, z: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        hidden, _ = self.decoder.run(b.tokens[:, :-1], z, u)
        return -self.token_nll(hidden, b.tokens[:, 1:], b.lengths - 1)

    def log_likelihood(self, x: TextBatch | torch.Tensor, z: torch.Tensor,
                       beta: torch.Tensor | float) -> torch.Tensor:
        """``log p(x|z)`` ``(B,)`` in nats: the sum over each document's words and ``</s>`` (teacher
        forcing from ``<s>``).  Dropout is active in train mode: call ``model.eval()`` for evaluation."""
        b = _as_batch(x)
        return self._log_likelihood(b, z, self.hyper_input(beta, len(b), self._reference()))

    def forward(self, x: TextBatch | torch.Tensor, beta: torch.Tensor | float, *, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> TextVAEOutput:
        """One reparameterised sample ``z = mu + sigma * noise`` per document (``noise`` ``(B, K)``, drawn from
        ``generator`` when ``None``); ``rate``, ``distortion`` ``(B,)`` in nats per document."""
        b = _as_batch(x)
        u = self.hyper_input(beta, len(b), self._reference())
        mu, log_var = self.encoder(b.tokens, b.lengths, u)
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * log_var) * noise
        distortion = -self._log_likelihood(b, z, u)
        return TextVAEOutput(mu, log_var, z, gaussian_kl(mu, log_var), distortion, b.lengths - 1)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, beta: torch.Tensor | float, *, max_length: int = 100,
                 greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Decode token ids from latents ``z`` ``(B, K)`` (greedy, or sampling at ``temperature``) until
        ``</s>`` or ``max_length`` words; returns each document's word ids without ``<s>`` / ``</s>``.
        Runs in eval mode (no dropout) and restores the previous mode."""
        was_training = self.training
        self.eval()
        try:
            u = self.hyper_input(beta, z.shape[0], self._reference())
            state = self.decoder.initial_state(z, u)
            tok = torch.full((z.shape[0], 1), BOS_ID, dtype=torch.long, device=z.device)
            done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
            steps = []
            for _ in range(max_length + 1):
                hidden, state = self.decoder.run(tok, z, u, state)
                logits = self.decoder.out(hidden[:, -1])
                if greedy:
                    nxt = logits.argmax(dim=-1)
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                nxt = torch.where(done, torch.full_like(nxt, EOS_ID), nxt)
                steps.append(nxt)
                done |= nxt == EOS_ID
                if bool(done.all()):
                    break
                tok = nxt.unsqueeze(1)
        finally:
            self.train(was_training)
        ids = torch.stack(steps, dim=1).cpu().tolist()
        return [row[:row.index(EOS_ID)] if EOS_ID in row else row[:max_length] for row in ids]

    def sample_prior(self, n: int, beta: torch.Tensor | float, *, max_length: int = 100, greedy: bool = True,
                     generator: torch.Generator | None = None) -> list[list[int]]:
        """Generate ``n`` documents from ``z ~ N(0, I)`` (``generator`` on the model's device)."""
        p = self._reference()
        z = torch.randn((n, self.latent_dim), generator=generator, dtype=p.dtype, device=p.device)
        return self.generate(z, beta, max_length=max_length, greedy=greedy, generator=generator)

    # -- evaluation hooks ---------------------------------------------------------------------------------
    def check_data(self, data: Any) -> None:
        check_vocab(self, data)

    def set_evaluation_options(self, *, max_tokens: int | None = None, **unknown: Any) -> None:
        """``max_tokens``: tokens decoded per importance-sampling chunk (default 16,384 on CPU, 262,144 on
        CUDA)."""
        if unknown:
            super().set_evaluation_options(**unknown)
        self._max_tokens = max_tokens

    def iw_nll(self, x: TextBatch, beta: torch.Tensor, k: int, *, generator: torch.Generator | None = None,
               max_rows: int = 0) -> torch.Tensor:
        max_tokens = getattr(self, "_max_tokens", None)
        if max_tokens is None:
            max_tokens = 262_144 if self._reference().device.type == "cuda" else 16_384
        return iw_nll_batch(self, x, beta, k, generator=generator, max_tokens=max_tokens)

    def summarize(self, result: dict, data: Any) -> dict:
        """Perplexities and per-token distortion over the evaluated documents (the first ``n_examples``)."""
        n, n_iw = result["n_examples"], result["iw_examples"]
        counts = (data.lengths[:n] - 1).to(torch.float64)
        n_tokens = float(counts.sum())
        iw_tokens = float(counts[:n_iw].sum()) if n_iw else 0.0
        iw = result.get("iw_nll")
        return {
            "perplexity": [perplexity(v * n_iw, iw_tokens) for v in iw] if iw else None,
            "perplexity_elbo": [perplexity(v * n, n_tokens) for v in result["neg_elbo"]],
            "distortion_per_token": [d * n / n_tokens for d in result["distortion"]],
            "n_tokens": int(n_tokens), "n_tokens_iw": int(iw_tokens), "tokens_per_document": n_tokens / n,
            "data_protocol": getattr(data, "protocol", None), "token_convention": TOKEN_CONVENTION,
            "estimators": {
                "units": "nats per document (sum over tokens / latents, mean over documents)",
                "distortion": "-log p(x|z) at one z = mu + sigma * eps per document (the same eps for every beta): "
                              "token NLL summed over the words and </s>; nats per document",
                "iw_nll": "importance-weighted NLL -log 1/k sum_i p(x, z_i) / q(z_i|x), k = iw_k (He et al. 2019: "
                          "500), nats per document, mean over the first iw_examples documents",
                "perplexity": "exp(sum of iw_nll over the IW documents / their n_tokens); " + TOKEN_CONVENTION,
                "perplexity_elbo": "exp(sum of neg_elbo / n_tokens), an upper bound on perplexity; " + TOKEN_CONVENTION,
                "distortion_per_token": "sum of distortion / n_tokens, nats per token",
            }}


# ----------------------------------------------------------------------------------------------------
# construction (deep.models.registry contract)
# ----------------------------------------------------------------------------------------------------
def _positive_int(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool) or float(value) != int(float(value)) or int(float(value)) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise TextModelError(f"{name} must be a positive integer, got {value!r}") from None
    return int(float(value))


def _probability(name: str, value: Any) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if not 0.0 <= p < 1.0:
        raise TextModelError(f"{name} must be a dropout probability in [0, 1), got {value!r}")
    return p


def build_text_vae(vocab_size: int, *, mr: bool = True, latent_dim: int = 32, embed_dim: int = 256,
                   hidden_dim: int = 256, dec_dropout_in: float = 0.5, dec_dropout_out: float = 0.5,
                   beta_range: BetaRange | dict | Sequence[float] = BetaRange(), enc_gate: str = "sigmoid",
                   dec_gate: str = "sqrt", hyper_hidden: Sequence[int] = (), init: str = "uniform",
                   vocab_digest: str | None = None, dataset: str = "yahoo", arch: str = "lstm",
                   logit_chunk: int = 4096, enc_gate_lambda: float | None = None) -> TextVAE:
    """Build an LSTM text beta-VAE (``mr=False``) or MR-VAE over a vocabulary of ``vocab_size`` ids.

    ``enc_gate_lambda``: ``None`` (every gate starts open, the paper's reference code) or lambda > 0: the MR
    encoder's last-state gate starts as ``lambda / (lambda + beta)`` (:meth:`Gate.init_linear_vae_response_`; Yahoo
    recommends :data:`YAHOO_ENC_GATE_LAMBDA`).  ``vocab_digest`` (the data's :attr:`Vocabulary.digest`) is recorded so that evaluation can refuse data
    with another vocabulary.  ``build_text_vae(**model.config)`` rebuilds the same architecture.
    """
    if dataset != "yahoo" or arch != "lstm":
        raise TextModelError(f"the LSTM text VAE is dataset 'yahoo', arch 'lstm'; got {dataset!r}, {arch!r}")
    vocab_size = _positive_int("vocab_size", vocab_size)
    if vocab_size <= EOS_ID:
        raise TextModelError(f"vocab_size must include the specials <pad>, <s>, </s>, <unk>; got {vocab_size}")
    for what, kind in (("enc_gate", enc_gate), ("dec_gate", dec_gate)):
        if kind not in GATE_KINDS:
            raise TextModelError(f"unknown {what} kind {kind!r}; choose one of {sorted(GATE_KINDS)}")
    if init not in INITS:
        raise TextModelError(f"unknown init {init!r}; choose one of {list(INITS)}")
    if enc_gate_lambda is not None:
        try:
            if isinstance(enc_gate_lambda, bool):
                raise ValueError
            enc_gate_lambda = float(enc_gate_lambda)
        except (TypeError, ValueError):
            enc_gate_lambda = math.nan
        if not (math.isfinite(enc_gate_lambda) and enc_gate_lambda > 0):
            raise TextModelError("enc_gate_lambda must be null (open gates, the paper's initialisation) or a number "
                                 "> 0 (the beta at which the encoder's last-state gate starts half closed)")
        if mr and (enc_gate != "sigmoid" or tuple(hyper_hidden)):
            raise TextModelError("enc_gate_lambda needs enc_gate='sigmoid' and the affine hyper-map "
                                 f"(hyper_hidden=()); got enc_gate={enc_gate!r}, hyper_hidden={tuple(hyper_hidden)}")
    hidden = tuple(_positive_int("hyper_hidden entries", h) for h in hyper_hidden)
    return TextVAE(vocab_size, mr=bool(mr), latent_dim=_positive_int("latent_dim", latent_dim),
                   embed_dim=_positive_int("embed_dim", embed_dim), hidden_dim=_positive_int("hidden_dim", hidden_dim),
                   dec_dropout_in=_probability("dec_dropout_in", dec_dropout_in),
                   dec_dropout_out=_probability("dec_dropout_out", dec_dropout_out),
                   beta_range=as_beta_range(beta_range), enc_gate=enc_gate, dec_gate=dec_gate,
                   hyper_hidden=hidden, init=init, vocab_digest=vocab_digest,
                   logit_chunk=_positive_int("logit_chunk", logit_chunk), enc_gate_lambda=enc_gate_lambda)


def build(config: Any, data: Any) -> TextVAE:
    """The model a :class:`deep.train.TrainConfig` describes on text ``data`` (vocabulary size from it).

    Uses ``mr``, ``latent_dim`` (default 32), ``beta_a``/``beta_b``, ``enc_gate``, ``dec_gate``,
    ``hyper_hidden`` and ``model_options`` (:data:`MODEL_OPTIONS`: ``embed_dim``, ``hidden_dim``,
    ``dec_dropout`` (both dropouts), ``dec_dropout_in``, ``dec_dropout_out``, ``init``, ``logit_chunk``,
    ``enc_gate_lambda``).
    """
    vocab = getattr(data, "vocab", None)
    if not isinstance(vocab, Vocabulary):
        raise TextModelError("arch 'lstm' trains on text data (dataset 'yahoo'); the data given has no vocabulary")
    objective = getattr(config, "objective", "elbo") or "elbo"
    if objective != "elbo":
        raise TextModelError(f"arch 'lstm' supports objective 'elbo' only, got {objective!r}")
    distortion = getattr(config, "distortion", None)
    if distortion not in (None, DISTORTION_NAME):
        raise TextModelError(f"arch 'lstm' has one distortion, {DISTORTION_NAME!r} (token NLL); got {distortion!r}")
    options = dict(getattr(config, "model_options", None) or {})
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise TextModelError(f"unknown model option(s) {unknown} for arch 'lstm'; accepted: {list(MODEL_OPTIONS)}")
    if "dec_dropout" in options:
        both = options.pop("dec_dropout")
        options.setdefault("dec_dropout_in", both)
        options.setdefault("dec_dropout_out", both)
    beta_range = getattr(config, "beta_range", None) or BetaRange(config.beta_a, config.beta_b)
    return build_text_vae(len(vocab), mr=bool(config.mr), latent_dim=config.latent_dim or DEFAULTS["latent_dim"],
                          beta_range=beta_range, enc_gate=config.enc_gate, dec_gate=config.dec_gate,
                          hyper_hidden=tuple(config.hyper_hidden or ()), vocab_digest=vocab.digest, **options)


def rebuild(model_config: dict) -> TextVAE:
    """The architecture of ``model.config`` (weights not loaded)."""
    return build_text_vae(**dict(model_config))


# ----------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------
def perplexity(nll_nats: float | torch.Tensor, n_tokens: int | float | torch.Tensor) -> float:
    """``exp(total NLL / n_tokens)``: ``nll_nats`` is the NLL summed over documents (nats) and ``n_tokens``
    the predicted tokens of those documents (words + ``</s>``)."""
    n = float(n_tokens)
    if not n > 0:
        raise ValueError(f"n_tokens must be > 0, got {n_tokens!r}")
    return math.exp(float(nll_nats) / n)


@torch.no_grad()
def iw_nll_batch(model: TextVAE, batch: TextBatch, beta: float | torch.Tensor, k: int, *,
                 generator: torch.Generator | None = None, max_tokens: int = 16384) -> torch.Tensor:
    """Importance-weighted NLL ``(B,)`` (float64 nats per document) of ``batch`` at one ``beta`` with ``k``
    samples, via :func:`deep.evaluate.metrics.iw_nll`: the documents are passed as row indices, so the samples of a
    chunk decode ``c * B`` rows with ``c * B * T <= max_tokens`` (at least one sample per chunk)."""
    bsz, width = batch.tokens.shape
    beta_t = torch.as_tensor(beta, dtype=torch.float32, device=batch.device).reshape(-1)[:1]
    rows = torch.arange(bsz, device=batch.device)
    chunk = max(1, min(k, max_tokens // max(1, bsz * width)))
    return iw_nll(rows, lambda _: model.encode(batch, beta_t.expand(bsz)),
                    lambda idx, z: model.log_likelihood(batch.select(idx), z, beta_t.expand(idx.shape[0])),
                    k=k, chunk=chunk, generator=generator)


def check_vocab(model: TextVAE, data: Any) -> None:
    """Raise :class:`TextVocabMismatchError` unless ``data`` uses the model's vocabulary."""
    cfg = model.config
    vocab = getattr(data, "vocab", None)
    if vocab is None:
        raise TextVocabMismatchError("text models evaluate on text data (a TextSplit with a vocabulary)")
    if len(vocab) != cfg["vocab_size"] or (cfg.get("vocab_digest") and cfg["vocab_digest"] != vocab.digest):
        raise TextVocabMismatchError(
            f"the data's vocabulary ({len(vocab)} ids, digest {vocab.digest[:12]}) is not the model's "
            f"({cfg['vocab_size']} ids, digest {str(cfg.get('vocab_digest'))[:12]}); load the data with the "
            "data options (vocab, train_split, max_vocab) used for training")
