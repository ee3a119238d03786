"""The data a run reads: prompt sets (:mod:`.prompts`) and preference-pair datasets (:mod:`.preference_pairs`).

* :mod:`.prompts` — prompt sets: load, split, fingerprint; :mod:`.prompt_files` reads and checks each file format.
* :mod:`.preference_pairs` — the pair records and :func:`load_preference_data`; :mod:`.schemas` turns the public
  schemas' rows (TRL, HH-RLHF, PKU-SafeRLHF, HelpSteer2, UltraFeedback) into pairs or rated responses.
* :mod:`.hub_datasets` — Hugging Face dataset names (``trl-lib/tldr``, ``openai/gsm8k:main``) for both: read
  from the local cache, or from the Hub only with ``allow_download``.
* :mod:`.text_files` — UTF-8 text with errors naming the file and the line (shared by both readers).

Layer: data sits at the bottom of the package, next to preferences; it imports no model code.
"""

from paretoalign.data.preference_pairs import PreferenceData, PreferencePair, load_preference_data
from paretoalign.data.prompts import load_prompts, split_prompts

__all__ = ["PreferenceData", "PreferencePair", "load_preference_data", "load_prompts", "split_prompts"]
