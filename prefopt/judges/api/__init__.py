"""``judge: openai``: LLM judges behind OpenAI-compatible endpoints (judges.py), their HTTP client with limits,
retries and usage (client.py, limits.py), the verdict cache (cache.py), prompts (templates.py) and answer readers
(verdicts.py); its options are prefopt.api_judge_config's. Standard library only: no SDK is needed."""

from prefopt.api_judge_config import ApiJudgeKeys, ApiOptions
from prefopt.judges.api.judges import OpenAIGradeJudge, OpenAIPreferenceJudge, build_api_judge

__all__ = ["ApiJudgeKeys", "ApiOptions", "OpenAIGradeJudge", "OpenAIPreferenceJudge", "build_api_judge"]
