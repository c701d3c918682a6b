"""Task domains, exact scoring, each party's data files and the federated split between clients and server."""

from fedgrpo.data.domains import (
    BUILTIN_DOMAINS,
    DataFileError,
    DomainSpec,
    Example,
    NotEnoughExamplesError,
    Question,
    derive_seed,
    majority_answer_rate,
    make_qid,
    normalise_answer,
    normalise_question,
    resolve_domain,
    score_answer,
)
from fedgrpo.data.files import labelled_jsonl, read_labelled, read_questions, write_labelled, write_questions
from fedgrpo.data.generate import generate, parse_gsm8k_answer
from fedgrpo.data.partition import (
    FederatedSplit,
    build_split,
    client_name,
    read_client_data,
    to_question,
    write_client_data,
)

__all__ = [
    "BUILTIN_DOMAINS",
    "DataFileError",
    "DomainSpec",
    "Example",
    "FederatedSplit",
    "NotEnoughExamplesError",
    "Question",
    "build_split",
    "client_name",
    "derive_seed",
    "generate",
    "majority_answer_rate",
    "make_qid",
    "normalise_answer",
    "normalise_question",
    "parse_gsm8k_answer",
    "read_client_data",
    "read_labelled",
    "read_questions",
    "resolve_domain",
    "score_answer",
    "to_question",
    "write_client_data",
    "labelled_jsonl",
    "write_labelled",
    "write_questions",
]
