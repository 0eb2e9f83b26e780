"""Corpus readers, frame store, probe sets and the embedded synthetic default.

Modules (import them directly; nothing heavy is imported here):
  errors          DataError(path, reason): every bad-input error names the file
  video           PyAV probe / decode at chosen times
  soccernet       SoccerNet tree, Labels-v2.json, split by game
  deepsportradar  DeepSportRadar COCO json, "human" masks, 14x14 tile labels, split by arena
  synthetic       the embedded default corpus (mini SoccerNet + mini DeepSportRadar)
  inspect         `sportray inspect`: summary of a corpus and its bad files
  frames          the frame store (Parquet shards)
  probesets       probe sets (.npz)
  defaults        what a command uses when given no data path
"""
from sportray.data.errors import DataError

__all__ = ["DataError"]
