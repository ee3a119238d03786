"""The data a run reads: prompt sets (:mod:`.prompts`) and preference-pair datasets (:mod:`.preference_pairs`).

Layer: data sits at the bottom of the package, next to preferences; it imports no model code.
"""

from paretoalign.data.preference_pairs import PreferenceData, PreferencePair, load_preference_data
from paretoalign.data.prompts import load_prompts, split_prompts

__all__ = ["PreferenceData", "PreferencePair", "load_preference_data", "load_prompts", "split_prompts"]
