"""The ``azure-openai`` family: Azure OpenAI with ``api-key`` credentials.

The wire format is OpenAI's. Deployment paths
(``/openai/deployments/{deployment}/chat/completions?api-version=...``) and
the v1 paths (``/openai/v1/chat/completions``) both classify by their tail;
the model is the body's ``model`` when present, else the deployment name.
Azure adds ``prompt_filter_results`` chunks with empty ``choices`` and no
usage, which the OpenAI reader already passes over. A route that uses a
Microsoft Entra token instead of a key should use the ``openai`` family,
whose credential is ``authorization: Bearer``.
"""

from __future__ import annotations

from extproc.providers.openai import OpenAIFamily


class AzureOpenAIFamily(OpenAIFamily):
    """OpenAI's wire format with Azure's ``api-key`` header."""

    name = "azure-openai"
    model_in_body = False  # the deployment in the path decides

    def credential_headers(self, secret: str) -> dict[str, str]:
        return {"api-key": secret}
