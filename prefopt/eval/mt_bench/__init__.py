"""MT-Bench (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", arXiv:2306.05685) as
FastChat's llm_judge runs it: two-turn answers (generation.py), single-answer grading by an LLM judge with FastChat's
judge prompts (grading.py), per-turn, overall and per-category means (scores.py), FastChat's file formats
(formats.py), and the whole run into one output folder (run.py: :func:`run_mt_bench`).

FastChat's facts and formats carry over (question/answer/judgment files, the per-category temperatures, the
reference-answer categories, the judge prompts' names and fields, the rating pattern); its code and prompt texts do
not: the judge prompts are the user's file (FastChat's judge_prompts.jsonl).
"""

from prefopt.eval.mt_bench.generation import MTBenchDecoding
from prefopt.eval.mt_bench.run import MTBenchRequest, run_mt_bench, score_judgments

__all__ = ["MTBenchDecoding", "MTBenchRequest", "run_mt_bench", "score_judgments"]
