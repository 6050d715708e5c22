"""``judge: openai``: LLM judges behind OpenAI-compatible endpoints (judges.py), their HTTP client with limits,
retries and usage (client.py, limits.py), the verdict cache (cache.py), prompts (templates.py) and answer readers
(verdicts.py). Standard library only: no SDK is needed."""

from prefopt.judges.api.judges import OpenAIGradeJudge, OpenAIPreferenceJudge, build_api_judge
from prefopt.judges.api.options import ApiJudgeKeys, ApiOptions

__all__ = ["ApiJudgeKeys", "ApiOptions", "OpenAIGradeJudge", "OpenAIPreferenceJudge", "build_api_judge"]
