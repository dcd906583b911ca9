"""The CIDEr-D reward: equal to pycocoevalcap's CIDEr-D on fixed cases with the same document frequencies."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer

from captioning.evaluation.cider_d import CiderD

REFERENCES = [
    ["a dog runs on the grass", "a brown dog is running", "the dog plays in a field", "a dog on green grass",
     "dog running outside"],
    ["two people ride bikes", "a man and a woman on bicycles", "people cycling down a road", "two cyclists",
     "a couple riding bikes on the street"],
    ["a child eats ice cream", "a little girl with an ice cream cone", "a kid eating dessert",
     "a girl licks her ice cream", "child with a cone"],
    ["a red car parked on the street", "a car by the road", "a red vehicle parked outside a house",
     "the car is red", "a parked red car"],
]
CANDIDATES = ["a dog running on the grass", "a man riding a bike on the road", "a girl eating ice cream",
              "a red car", "a dog dog dog", "", "the the the the the the the the the the the the", "a car on the street"]
IMAGE_OF = [0, 1, 2, 3, 0, 1, 2, 3]


def official(candidates, references):
    """pycocoevalcap's per-caption CIDEr-D; its document frequencies come from `references` (one entry per caption)."""
    scorer = CiderScorer(n=4, sigma=6.0)
    for candidate, refs in zip(candidates, references, strict=True):
        scorer += (candidate, refs)
    _, scores = scorer.compute_score()
    return scores


def test_equals_pycocoevalcap_with_the_same_document_frequencies():
    # pycocoevalcap counts each scored entry as a document: score one caption per image to share its frequencies.
    for offset in (0, 4):
        candidates = CANDIDATES[offset:offset + 4]
        expected = official(candidates, REFERENCES)
        reward = CiderD([[r.split() for r in refs] for refs in REFERENCES])
        got = reward.scores([c.split() for c in candidates], [[r.split() for r in refs] for refs in REFERENCES])
        assert np.allclose(got, expected, atol=1e-6, rtol=0), (got, expected)
    assert official([CANDIDATES[0]] * 4, REFERENCES)[0] > 1.0  # a good caption scores high: the cases can fail


def test_reference_vectors_are_cached_per_image_and_ids_work_like_words():
    reward = CiderD([[r.split() for r in refs] for refs in REFERENCES])
    refs = [r.split() for r in REFERENCES[0]]
    first = reward.score(CANDIDATES[0].split(), refs, key=0)
    assert 0 in reward._references and reward.score(CANDIDATES[0].split(), refs, key=0) == first
    vocab = {word: i for i, word in enumerate(sorted({w for refs in REFERENCES for r in refs for w in r.split()} |
                                                     {w for c in CANDIDATES for w in c.split()}))}
    ids = CiderD([[[vocab[w] for w in r.split()] for r in refs] for refs in REFERENCES])
    assert ids.score([vocab[w] for w in CANDIDATES[0].split()], [[vocab[w] for w in r] for r in refs]) == \
        pytest.approx(first, abs=1e-12)


def test_state_round_trips_through_json_and_bad_states_are_named():
    reward = CiderD([[r.split() for r in refs] for refs in REFERENCES])
    again = CiderD.from_state(json.loads(json.dumps(reward.state())))
    candidates, refs = [c.split() for c in CANDIDATES], [[r.split() for r in REFERENCES[i]] for i in IMAGE_OF]
    assert np.array_equal(again.scores(candidates, refs), reward.scores(candidates, refs))
    state = reward.state()
    for key, value, message in [("images", 0, "cider_d.images: expected an integer >= 1"),
                                ("sigma", "6", "cider_d.sigma: expected a positive number"),
                                ("document_frequency", [[["a"], 99]], "cider_d.document_frequency"),
                                ("document_frequency", [[[{"_target_": "os.system"}], 1]], "cider_d.document_frequency")]:
        with pytest.raises(ValueError, match=message):
            CiderD.from_state({**state, key: value})
    with pytest.raises(ValueError, match="at least one image"):
        CiderD().score(["a"], [["a"]])


def test_sentence_bleu_equals_pycocoevalcaps_per_image_bleu():
    from pycocoevalcap.bleu.bleu import Bleu

    from captioning.evaluation.bleu_reward import sentence_bleu

    candidates = CANDIDATES + ["a brown dog is running", "two"]  # an exact reference; a one-word caption
    references = [REFERENCES[i] for i in IMAGE_OF] + [REFERENCES[0], REFERENCES[1]]
    _, per_image = Bleu(4).compute_score({i: refs for i, refs in enumerate(references)},
                                         {i: [c] for i, c in enumerate(candidates)}, verbose=0)
    got = [sentence_bleu(c.split(), [r.split() for r in refs]) for c, refs in zip(candidates, references, strict=True)]
    assert np.allclose(got, per_image[3], atol=1e-9, rtol=0), (got, per_image[3])
    assert got[8] == pytest.approx(1.0) and got[5] < 1e-6  # a reference itself scores 1, the empty caption 0
