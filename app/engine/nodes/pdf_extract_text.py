"""The ``pdf.extract_text`` node: the text of each page of a PDF, from a URL or base64.

A URL is fetched through ``app.engine.outbound`` (the SSRF-guarded client) with the body
capped at ``pdf_max_bytes``; base64 input (a ``data:`` URL prefix and line breaks are
accepted) is validated and capped the same way. pypdf is pure Python and CPU-bound, so the
parsing runs in a thread, off the event loop, and stops at the next page when the step is
cancelled or times out.

Page cap: a PDF with more than ``pdf_max_pages`` pages fails the step (it is not truncated),
so the nodes after it never act on a part of a document as if it were the whole; the check
reads only the page tree, before any text is extracted. Input that is not a PDF, a PDF that
needs a password, and a damaged PDF fail the step with a message that says which.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import re
import threading
from typing import Any, Self

from pydantic import Field, model_validator
from pypdf import PasswordType, PdfReader
from pypdf.errors import PyPdfError

from app.engine import outbound
from app.engine.caps import cap_output
from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)

# The PDF header may follow some junk (the spec's readers look within the first 1024 bytes).
_HEADER_WINDOW = 1024
# JSONB cannot store NUL or a lone surrogate; a glyph without a Unicode mapping can yield one.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class PdfExtractTextConfig(NodeConfig):
    """The configuration of a ``pdf.extract_text`` node: exactly one of url and base64."""

    url: str | None = Field(
        None,
        min_length=1,
        max_length=8192,
        description="Where to download the PDF: an http or https URL.",
    )
    base64: str | None = Field(
        None,
        min_length=1,
        description="The PDF itself, base64-encoded (a data: URL prefix is accepted).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url is None) == (self.base64 is None):
            given = "both are set" if self.url is not None else "neither is set"
            raise ValueError(f"give exactly one of url and base64 ({given})")
        return self


async def run(ctx: NodeContext, config: PdfExtractTextConfig, input: Any) -> NodeOutcome:
    """Read the PDF and output the text of each page, all of it, and the page count."""
    max_bytes: int = ctx.settings.pdf_max_bytes
    if config.url is not None:
        data = await _download(ctx, config.url, max_bytes)
    else:
        data = _decode_base64(config.base64 or "", max_bytes)
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise NodeFailure("The input is not a PDF: it has no %PDF- header.")
    stop = threading.Event()
    try:
        texts = await asyncio.to_thread(_page_texts, data, ctx.settings.pdf_max_pages, stop)
    finally:
        stop.set()  # a cancelled or timed-out step: the thread ends at the next page
    pages = [{"page": number, "text": text} for number, text in enumerate(texts, start=1)]
    output = {"pages": pages, "text": "\n\n".join(texts), "pageCount": len(texts)}
    # A book's text is cut to the step cap: pages and text each keep their beginning.
    return NodeOutcome(await cap_output(output, ctx.settings))


async def _download(ctx: NodeContext, url: str, max_bytes: int) -> bytes:
    policy = dataclasses.replace(
        outbound.OutboundPolicy.from_settings(ctx.settings), max_response_bytes=max_bytes
    )
    try:
        response = await outbound.request(
            policy, "GET", url, headers={"Accept": "application/pdf, */*"}
        )
    except outbound.ResponseTooLarge:
        raise _too_large(max_bytes) from None
    if not 200 <= response.status <= 299:
        status, host = response.status, response.host
        raise NodeFailure(f"Could not download the PDF: HTTP {status} from {host}.")
    return response.content


def _decode_base64(value: str, max_bytes: int) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    compact = "".join(value.split())  # base64 from mail or files is often wrapped in lines
    if len(compact) > 4 * -(-max_bytes // 3):  # surely longer than max_bytes once decoded
        raise _too_large(max_bytes)
    try:
        data = base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise NodeFailure(f"The base64 input is not valid base64: {exc}.") from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def _too_large(max_bytes: int) -> NodeFailure:
    return NodeFailure(f"The PDF is larger than {max_bytes} bytes, the most this server reads.")


def _page_texts(data: bytes, max_pages: int, stop: threading.Event) -> list[str]:
    """The text of each page (in a worker thread); a NodeFailure for an unreadable PDF."""
    try:
        reader = _open(data)
        count = len(reader.pages)
        if count > max_pages:
            raise NodeFailure(f"The PDF has {count} pages; at most {max_pages} are read.")
        texts = []
        for page in reader.pages:
            if stop.is_set():
                break
            texts.append(_UNSTORABLE.sub("\ufffd", page.extract_text()))
        return texts
    except NodeFailure:
        raise
    except PyPdfError as exc:
        detail = str(exc).rstrip(".") or type(exc).__name__
        raise NodeFailure(f"The PDF is damaged and cannot be read: {detail}.") from None
    except Exception as exc:
        # pypdf meets hostile input with any kind of error (KeyError, zlib.error, ...): the
        # cause is the document, not this server, so it is the step's failure to report.
        raise NodeFailure(
            f"The PDF is damaged and cannot be read ({type(exc).__name__})."
        ) from None


def _open(data: bytes) -> PdfReader:
    reader = PdfReader(io.BytesIO(data), strict=False)
    if not reader.is_encrypted:
        return reader
    try:
        # Many PDFs are encrypted with an empty user password (an owner password only
        # restricts printing or editing): those can be read.
        opened = reader.decrypt("")
    except (PyPdfError, NotImplementedError) as exc:
        detail = str(exc).rstrip(".") or type(exc).__name__
        raise NodeFailure(f"The PDF is encrypted in a way that cannot be read: {detail}.") from None
    if opened == PasswordType.NOT_DECRYPTED:
        raise NodeFailure("The PDF is encrypted with a password; it cannot be read.")
    return reader


NODE_TYPE = register(
    NodeType(
        type="pdf.extract_text",
        category="Documents",
        label="Extract text from PDF",
        description="Read a PDF from a URL or from base64 and output the text of each page "
        "and of the whole document. Scanned pages without a text layer give empty text.",
        config_model=PdfExtractTextConfig,
        run=run,
    )
)
