"""Decoding as pure functions over the decoder contract (`init_state`, `step`, `reorder_state`).

search.py: greedy and batched beam search (with n-gram blocking); diverse.py: diverse beam search;
sampling.py: top-k / nucleus sampling, and samples with their graph for self-critical training.
"""
from captioning.decoding.diverse import diverse_beam_search
from captioning.decoding.sampling import Samples, sample, sample_with_log_probs
from captioning.decoding.search import (
                                        LENGTH_PENALTIES,
                                        Decoder,
                                        beam_search,
                                        greedy_search,
                                        length_penalty_of,
                                        repeated_ngram_words,
                                        word_by_word,
)

__all__ = ["LENGTH_PENALTIES", "Decoder", "Samples", "beam_search", "diverse_beam_search", "greedy_search",
           "length_penalty_of", "repeated_ngram_words", "sample", "sample_with_log_probs", "word_by_word"]
