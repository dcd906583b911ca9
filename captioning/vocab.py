"""Tokenisation and the word vocabulary (built from the training split only)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from nltk.tokenize import RegexpTokenizer

from captioning.errors import DataError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # PAD must stay 0: padding is masked by index

# Regex tokenizer: needs no downloaded NLTK data (no punkt). Words keep inner apostrophes and
# hyphens; punctuation is dropped, as in the usual COCO/Karpathy preprocessing.
_TOKENIZER = RegexpTokenizer(r"\w+(?:['\-]\w+)*")


def tokenize(text: str) -> list[str]:
    return _TOKENIZER.tokenize(text.lower())


class Vocabulary:
    def __init__(self, words: Iterable[str]):
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise DataError(f"a vocabulary must start with {SPECIALS}")
        if not all(isinstance(word, str) and word for word in words) or len(set(words)) != len(words):
            raise DataError("a vocabulary must be a list of distinct, non-empty words")
        self.itos = words
        self.stoi = {word: index for index, word in enumerate(words)}
        self.pad, self.start, self.end, self.unk = (self.stoi[token] for token in SPECIALS)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> "Vocabulary":
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + [word for word in kept if word not in SPECIALS])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str, max_length: int) -> list[int]:
        """`<start> w1 .. wn <end>` with at most `max_length` words; unknown words become `<unk>`."""
        words = tokenize(caption)[:max_length]
        return [self.start] + [self.stoi.get(word, self.unk) for word in words] + [self.end]

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first `<end>`, without specials other than `<unk>`."""
        words = []
        for index in ids:
            index = int(index)
            if index == self.end:
                break
            if index in (self.pad, self.start):
                continue
            words.append(self.itos[index])
        return words

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.decode_tokens(ids))

    def to_json(self) -> list[str]:
        return list(self.itos)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.itos, ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        try:
            return cls(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, DataError, TypeError) as error:
            raise DataError(f"{path}: not a vocabulary file ({error})") from error


def check_vocabulary(vocab: Vocabulary, min_count: int, source: str) -> None:
    """Refuse a vocabulary of special tokens only: no word of the training captions occurs `min_count` times,
    so every caption would be `<unk>`s and a run would "train" without learning a word."""
    if len(vocab) <= len(SPECIALS):
        raise DataError(f"{source}: no word occurs {min_count} or more times in the training captions, so the "
                        f"vocabulary holds only {', '.join(SPECIALS)} (lower vocab.min_count, or check the captions)")
