"""Task domains, exact scoring and the federated split of data between clients and server."""

from fedgrpo.data.domains import (
    BUILTIN_DOMAINS,
    DomainSpec,
    Example,
    Question,
    derive_seed,
    generate,
    majority_answer_rate,
    make_qid,
    normalise_answer,
    normalise_question,
    parse_gsm8k_answer,
    resolve_domain,
    score_answer,
)
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
    "DomainSpec",
    "Example",
    "FederatedSplit",
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
    "resolve_domain",
    "score_answer",
    "to_question",
    "write_client_data",
]
