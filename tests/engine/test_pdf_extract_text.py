"""Tests for the pdf.extract_text node, on PDFs made with fpdf2 and served by a real server."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fpdf import FPDF
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from app.engine.nodes.base import NodeContext, NodeFailure, NodeOutcome
from app.engine.nodes.pdf_extract_text import PdfExtractTextConfig, run
from app.engine.outbound import OutboundBlocked
from app.engine.validation import validate_workflow_graph
from app.settings import Settings
from tests.factories import Factory
from tests.runs import create_workflow, edge, execute, node, steps_by_node, wait_for
from tests.servers import LocalHTTP

RUN_ID = uuid.UUID("3e1f5a7c-9b2d-4f6e-8a1c-5d7f9b3e1a2c")
WORKSPACE_ID = uuid.UUID("c4d5e6f7-a8b9-4c0d-9e1f-2a3b4c5d6e7f")

# fpdf2's core fonts are Latin-1: accents, ß and ¼ are as far as their Unicode goes.
PAGES = [
    "Invoice INV-2041\nIssued 2026-03-02\nTotal due: 1,250.00 EUR",
    "Café crème, naïve façade: 5 ¼ kg\nÜber Straße",
    "Thank you for your business.",
]
EXPECTED = {
    "pages": [{"page": n, "text": text} for n, text in enumerate(PAGES, start=1)],
    "text": "\n\n".join(PAGES),
    "pageCount": 3,
}


def make_pdf(pages: list[str], *, user_password: str | None = None, owner: bool = False) -> bytes:
    """A PDF with one page per text (an empty text makes a blank page)."""
    pdf = FPDF()
    if user_password is not None or owner:
        pdf.set_encryption(owner_password="owner-pass", user_password=user_password or "")
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


INVOICE = make_pdf(PAGES)


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def files() -> Iterator[LocalHTTP]:
    """The outside world: a real HTTP server on 127.0.0.1 serving PDFs and other files."""

    async def invoice(request: Request) -> Response:
        return Response(INVOICE, media_type="application/pdf")

    async def page(request: Request) -> Response:
        return Response("<html>Not a PDF</html>", media_type="text/html")

    server = LocalHTTP(routes={"/files/invoice.pdf": invoice, "/files/page.html": page}).start()
    yield server
    server.stop()


def context(settings: Settings) -> NodeContext:
    return NodeContext(
        run_id=RUN_ID,
        workspace_id=WORKSPACE_ID,
        node_id="extract",
        attempt=1,
        step_started_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        settings=settings,
        secrets={"OPENAI_KEY": "sk-test-unused"},
    )


async def call(data: dict[str, Any], settings: Settings) -> NodeOutcome:
    """Run the node with this config (as the builder saves it), with a hang guard."""
    config = PdfExtractTextConfig.model_validate(data)
    return await asyncio.wait_for(run(context(settings), config, {}), 20)


async def failure(data: dict[str, Any], settings: Settings) -> str:
    """The message of the NodeFailure the node raises with this config."""
    with pytest.raises(NodeFailure) as failed:
        await call(data, settings)
    return str(failed.value)


# --- the node type and its config --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Value error, give exactly one of url and base64 (neither is set)"),
        (
            {"url": None, "base64": None},
            "Value error, give exactly one of url and base64 (neither is set)",
        ),
        (
            {"url": "https://files.example/a.pdf", "base64": "JVBERi0="},
            "Value error, give exactly one of url and base64 (both are set)",
        ),
    ],
)
def test_config_takes_exactly_one_source(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as invalid:
        PdfExtractTextConfig.model_validate({"label": "Extract", **data})

    assert [(e["loc"], e["msg"]) for e in invalid.value.errors()] == [((), message)]


def test_a_node_without_a_source_is_a_warning_when_saved() -> None:
    graph = {
        "nodes": [node("t", "trigger"), node("extract", "pdf.extract_text", label="Extract")],
        "edges": [edge("t", "extract", "out")],
    }

    assert [(d.code, d.message, d.node_id) for d in validate_workflow_graph(graph)] == [
        (
            "INVALID_CONFIG",
            'Node "extract": config: Value error, give exactly one of url and base64 '
            "(neither is set).",
            "extract",
        )
    ]


# --- reading PDFs ------------------------------------------------------------------------


async def test_base64_input_gives_the_text_of_every_page(settings: Settings) -> None:
    outcome = await call({"base64": encoded(INVOICE)}, settings)

    assert outcome == NodeOutcome(EXPECTED)


async def test_a_url_is_downloaded_and_read(files: LocalHTTP, settings: Settings) -> None:
    outcome = await call({"url": files.url("/files/invoice.pdf")}, settings)

    assert outcome == NodeOutcome(EXPECTED)
    [hit] = files.hits
    assert (hit.method, hit.path, hit.headers["accept"]) == (
        "GET",
        "/files/invoice.pdf",
        "application/pdf, */*",
    )


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda text: f"data:application/pdf;base64,{text}", id="data-url"),
        pytest.param(
            lambda text: "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76)),
            id="mime-lines",
        ),
    ],
)
async def test_base64_in_a_data_url_or_in_lines_is_accepted(wrap: Any, settings: Settings) -> None:
    outcome = await call({"base64": wrap(encoded(INVOICE))}, settings)

    assert outcome == NodeOutcome(EXPECTED)


async def test_a_blank_page_has_empty_text(settings: Settings) -> None:
    outcome = await call({"base64": encoded(make_pdf(["Cover", "", "Back"]))}, settings)

    assert outcome.output == {
        "pages": [
            {"page": 1, "text": "Cover"},
            {"page": 2, "text": ""},
            {"page": 3, "text": "Back"},
        ],
        "text": "Cover\n\n\n\nBack",
        "pageCount": 3,
    }


async def test_a_pdf_encrypted_with_an_owner_password_only_is_read(settings: Settings) -> None:
    outcome = await call(
        {"base64": encoded(make_pdf(["Restricted printing"], owner=True))}, settings
    )

    assert outcome.output == {
        "pages": [{"page": 1, "text": "Restricted printing"}],
        "text": "Restricted printing",
        "pageCount": 1,
    }


async def test_pdf_max_bytes_and_pdf_max_pages_are_limits_not_bounds(settings: Settings) -> None:
    exact = settings.model_copy(update={"pdf_max_bytes": len(INVOICE), "pdf_max_pages": 3})

    outcome = await call({"base64": encoded(INVOICE)}, exact)

    assert outcome == NodeOutcome(EXPECTED)


async def test_parsing_runs_off_the_event_loop(settings: Settings) -> None:
    # While a long PDF is parsed, other coroutines of the worker keep running: a ticker
    # that yields to the loop gets many turns (parsed on the loop, it would get none).
    long_pdf = encoded(make_pdf([f"Page {n}\n" + "The quick brown fox. " * 60 for n in range(60)]))
    ticks = 0
    extraction = asyncio.ensure_future(call({"base64": long_pdf}, settings))
    while not extraction.done():
        ticks += 1
        await asyncio.sleep(0)

    assert (await extraction).output["pageCount"] == 60
    assert ticks >= 10


# --- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("JVBERi0xLjMK!!!", "The base64 input is not valid base64: Only base64 data is allowed."),
        ("JVBERi0xLjMKJV", "The base64 input is not valid base64: Incorrect padding."),
        (
            "JVBERi0xLjMKJ",
            "The base64 input is not valid base64: Invalid base64-encoded string: number of "
            "data characters (13) cannot be 1 more than a multiple of 4.",
        ),
    ],
)
async def test_invalid_base64_fails(value: str, message: str, settings: Settings) -> None:
    assert await failure({"base64": value}, settings) == message


async def test_input_that_is_not_a_pdf_fails(files: LocalHTTP, settings: Settings) -> None:
    message = "The input is not a PDF: it has no %PDF- header."

    assert await failure({"base64": encoded(b"PK\x03\x04 a zip file")}, settings) == message
    assert await failure({"url": files.url("/files/page.html")}, settings) == message


async def test_a_pdf_that_needs_a_password_fails(settings: Settings) -> None:
    locked = encoded(make_pdf(["Salaries 2026"], user_password="s3cret"))

    assert await failure({"base64": locked}, settings) == (
        "The PDF is encrypted with a password; it cannot be read."
    )


async def test_a_damaged_pdf_fails(settings: Settings) -> None:
    truncated = encoded(INVOICE[: len(INVOICE) // 2])

    assert await failure({"base64": truncated}, settings) == (
        "The PDF is damaged and cannot be read: Stream has ended unexpectedly."
    )


async def test_a_pdf_over_pdf_max_bytes_fails(files: LocalHTTP, settings: Settings) -> None:
    small = settings.model_copy(update={"pdf_max_bytes": len(INVOICE) - 1})
    message = f"The PDF is larger than {len(INVOICE) - 1} bytes, the most this server reads."

    assert await failure({"base64": encoded(INVOICE)}, small) == message
    assert await failure({"base64": encoded(INVOICE * 2)}, small) == message
    assert await failure({"url": files.url("/files/invoice.pdf")}, small) == message


async def test_a_pdf_over_pdf_max_pages_fails(settings: Settings) -> None:
    two_pages = settings.model_copy(update={"pdf_max_pages": 2})

    assert await failure({"base64": encoded(INVOICE)}, two_pages) == (
        "The PDF has 3 pages; at most 2 are read."
    )


async def test_a_url_that_answers_an_error_fails(files: LocalHTTP, settings: Settings) -> None:
    assert await failure({"url": files.url("/files/missing.pdf")}, settings) == (
        "Could not download the PDF: HTTP 404 from 127.0.0.1."
    )


async def test_a_metadata_address_is_refused_by_the_outbound_policy(settings: Settings) -> None:
    with pytest.raises(OutboundBlocked) as refused:
        await call({"url": "http://169.254.169.254/latest/meta-data/doc.pdf"}, settings)

    assert str(refused.value) == (
        "Refused to connect to 169.254.169.254: cloud metadata address is not allowed."
    )


# --- through the API, with a worker ------------------------------------------------------


def pdf_graph(**source: str) -> dict[str, Any]:
    return {
        "nodes": [
            node("t", "trigger"),
            node("pdf", "pdf.extract_text", label="Read", **source),
            node(
                "out",
                "output",
                value="{{ {'pages': input.pageCount, 'first': input.pages[0].text} }}",
            ),
        ],
        "edges": [edge("t", "pdf", "out"), edge("pdf", "out", "out")],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
    }


@pytest.mark.parametrize("source", ["url", "base64"])
async def test_a_workflow_reads_a_pdf_given_by_its_input(
    source: str, factory: Factory, worker: None, files: LocalHTTP
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, pdf_graph(**{source: "{{ trigger.pdf }}"}))
    pdf = files.url("/files/invoice.pdf") if source == "url" else encoded(INVOICE)

    queued = await execute(factory, owner, workflow_id, {"pdf": pdf})
    run = await wait_for(factory, owner, queued["run"]["id"])

    assert (run["status"], run["error"], run["output"]) == (
        "SUCCEEDED",
        None,
        {"pages": 3, "first": PAGES[0]},
    )
    step = steps_by_node(run)["pdf"]
    assert (step["nodeType"], step["status"], step["output"]) == (
        "pdf.extract_text",
        "SUCCEEDED",
        EXPECTED,
    )


async def test_a_workflow_given_something_else_than_a_pdf_fails_naming_the_node(
    factory: Factory, worker: None
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, pdf_graph(base64="{{ trigger.pdf }}"))

    queued = await execute(factory, owner, workflow_id, {"pdf": encoded(b"just some text")})
    run = await wait_for(factory, owner, queued["run"]["id"])

    message = "The input is not a PDF: it has no %PDF- header."
    assert (run["status"], run["error"], run["errorNodeId"], run["output"]) == (
        "FAILED",
        f'Node "pdf" (pdf.extract_text) failed: {message}',
        "pdf",
        None,
    )
    steps = steps_by_node(run)
    assert (steps["pdf"]["status"], steps["pdf"]["error"], steps["pdf"]["output"]) == (
        "FAILED",
        message,
        None,
    )
    assert steps["out"]["status"] == "CANCELLED"
