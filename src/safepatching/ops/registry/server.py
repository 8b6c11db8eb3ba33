"""The MLflow tracking server side of the registry (an `http(s)://` tracking URI): the `/health` probe made on opening,
and the typed errors, naming the URI, for requests that cannot reach the server or that it keeps failing (instead of
MLflow's own exception and its traceback)."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .store import RegistryError


class TrackingServerUnreachable(RegistryError):
    """The MLflow tracking server (an http(s) URI) did not answer; the message names the URI."""


PROBE_TIMEOUT_S = 10.0  # seconds the /health probe of a tracking server waits


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingServerUnreachable when nothing answers at `uri` (any HTTP answer, even 401, counts as up)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingServerUnreachable(f"MLflow tracking server {uri} is unreachable ({reason}); is it running? "
                                        "(mlflow.tracking_uri)") from None


def transport_error(uri: str, e: BaseException) -> RegistryError | None:
    """The typed error for a request that failed on the way to/from the server (connection refused or reset,
    timeout, retries exhausted, an artifact upload the server refused), or None for any other error."""
    import requests

    if isinstance(e, requests.exceptions.RequestException):
        resp = getattr(e, "response", None)
        if resp is not None:
            return RegistryError(f"MLflow tracking server {uri} refused a request ({resp.status_code} for "
                                 f"{resp.request.method if resp.request else ''} {resp.url}): {_short(str(e))}")
        return TrackingServerUnreachable(f"MLflow tracking server {uri} is unreachable: {_short(str(e))}")
    if isinstance(e, MlflowException) and e.message.startswith("API request to ") and (
            "failed with exception" in e.message or "failed to return code 200" in e.message):
        if "error responses" in e.message:  # it answered, with 5xx until MLflow's retries ran out
            return RegistryError(f"MLflow tracking server {uri} kept failing a request (its log says why, e.g. the "
                                 f"artifact store's credentials): {_short(e.message)}")
        return TrackingServerUnreachable(f"MLflow tracking server {uri} is unreachable: {_short(e.message)}")
    return None


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


class ServerClient:
    """An MlflowClient whose calls raise the typed transport errors (naming the URI) instead of MLflow's."""

    def __init__(self, client: MlflowClient, uri: str) -> None:
        self._client, self._uri = client, uri

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                err = transport_error(self._uri, e)
                if err is None:
                    raise
                raise err from None

        return call
