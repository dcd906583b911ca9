"""Vocabulary rules: train split only, min_count, specials, <unk>, the cut at vocab.max_words."""
from captioning.vocab import SPECIALS, Vocabulary, tokenize


def test_specials_and_padding_index():
    vocab = Vocabulary.build(["a dog"] * 5, min_count=5)
    assert vocab.itos[:4] == list(SPECIALS) and vocab.pad == 0
    assert vocab.encode("A dog", 20) == [vocab.start, vocab.stoi["a"], vocab.stoi["dog"], vocab.end]


def test_min_count_and_unknown_words():
    captions = ["a dog runs"] * 3 + ["a cat sleeps"] * 2
    vocab = Vocabulary.build(captions, min_count=3)
    assert "dog" in vocab.stoi and "cat" not in vocab.stoi
    assert vocab.encode("a cat", 20)[2] == vocab.unk
    assert vocab.decode(vocab.encode("a cat runs", 20)) == "a <unk> runs"


def test_max_words_cuts_words_not_specials():
    vocab = Vocabulary.build(["one two three four five"], min_count=1)
    ids = vocab.encode("one two three four five", 3)
    assert ids[0] == vocab.start and ids[-1] == vocab.end and vocab.decode(ids) == "one two three"


def test_tokenizer_needs_no_nltk_data_and_drops_punctuation():
    assert tokenize("A man's dog, running -- fast!") == ["a", "man's", "dog", "running", "fast"]


def test_vocabulary_is_built_from_train_split_only(tiny_run):
    import json

    from captioning.data.sources.drawing import COLOURS

    words = json.loads((tiny_run / "vocab.json").read_text())
    assert words[:4] == list(SPECIALS) and set(COLOURS) <= set(words)


def test_save_and_load(tmp_path):
    vocab = Vocabulary.build(["über café"] * 2, min_count=1)
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").itos == vocab.itos
