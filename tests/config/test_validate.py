"""Strict validation: every problem has a dotted path and says what was expected and got."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.config.helpers import load, load_error, problem_at

# --- top level -----------------------------------------------------------------------------

# Two providers, so that model refs in agent tests name configured ones.
PROVIDERS = (
    'models: {providers: {local: {baseUrl: "http://127.0.0.1:9/v1", api: "openai-completions"}, '
    'openai: {baseUrl: "http://127.0.0.1:9/v1", api: "openai-completions"}}}, '
)


def test_unknown_top_level_key_suggests_the_closest(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{gatway: {}}")
    assert problem_at(error, "gatway") == 'unknown key (did you mean "gateway"?)'


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{zzz: 1}")
    message = problem_at(error, "zzz")
    assert message.startswith("unknown key (expected one of: ")
    assert "gateway" in message and "logging" in message


def test_meta_is_accepted_and_ignored(tmp_path: Path) -> None:
    assert load(tmp_path, '{meta: {lastTouchedVersion: "1", anything: [1]}}').config.gateway.port


def test_section_must_be_an_object(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: 5, logging: "info"}')
    assert problem_at(error, "gateway") == "expected an object, got integer 5"
    assert problem_at(error, "logging") == 'expected an object, got string "info"'


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    text = '{gateway: {prot: 1, port: 0, bind: "x"}, logging: {level: "loud"}, extra: true}'
    error = load_error(tmp_path, text)
    assert len(error.problems) == 5
    lines = str(error).splitlines()
    assert lines[0] == f"Invalid config at {tmp_path / 'moltbot.json5'}:"
    assert [line.strip() for line in lines[1:]] == error.problems


# --- gateway -------------------------------------------------------------------------------


def test_misspelt_gateway_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{gateway: {prot: 80}}")
    assert problem_at(error, "gateway.prot") == 'unknown key (did you mean "port"?)'


def test_gateway_token_in_wrong_place_points_to_auth_token(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {token: "hunter2-token"}}')
    assert "gateway.auth.token" in problem_at(error, "gateway.token")
    assert "hunter2-token" not in str(error)


def test_gateway_password_in_wrong_place_points_to_auth_password(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {password: "pw"}}')
    assert "gateway.auth.password" in problem_at(error, "gateway.password")


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("0", "integer 0"),
        ("65536", "integer 65536"),
        ("8080.0", "number 8080.0"),
        ('"8080"', 'string "8080"'),
        ("true", "boolean true"),
    ],
)
def test_gateway_port_must_be_an_integer_in_range(tmp_path: Path, value: str, got: str) -> None:
    error = load_error(tmp_path, f"{{gateway: {{port: {value}}}}}")
    assert problem_at(error, "gateway.port") == f"expected an integer from 1 to 65535, got {got}"


def test_gateway_port_bounds_are_inclusive(tmp_path: Path) -> None:
    assert load(tmp_path, "{gateway: {port: 65535}}").config.gateway.port == 65535
    assert load(tmp_path, "{gateway: {port: 1}}").config.gateway.port == 1


def test_gateway_bind_rejects_unknown_word(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {bind: "everywhere"}}')
    assert problem_at(error, "gateway.bind") == (
        'expected "loopback", "lan" or an IP address, got "everywhere"'
    )


def test_gateway_bind_unsupported_reference_modes_get_a_hint(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {bind: "tailnet"}}')
    assert "not supported" in problem_at(error, "gateway.bind")


@pytest.mark.parametrize("bind", ["loopback", "lan", "192.168.1.10", "::1", "0.0.0.0"])
def test_gateway_bind_accepts_names_and_ip_literals(tmp_path: Path, bind: str) -> None:
    assert load(tmp_path, f'{{gateway: {{bind: "{bind}"}}}}').config.gateway.bind == bind


def test_gateway_mode_is_checked(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {mode: "server"}}')
    assert problem_at(error, "gateway.mode") == 'expected "local" or "remote", got "server"'
    assert load(tmp_path, '{gateway: {mode: "remote"}}').config.gateway.port == 18789


def test_auth_mode_enum(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {auth: {mode: "none"}}}')
    assert problem_at(error, "gateway.auth.mode") == 'expected "token" or "password", got "none"'


def test_auth_secret_of_wrong_type_shows_only_its_type(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {auth: {token: 987654321, password: ["pw-value"]}}}')
    assert problem_at(error, "gateway.auth.token") == "expected a non-empty string, got integer"
    assert problem_at(error, "gateway.auth.password") == "expected a non-empty string, got array"
    assert "987654321" not in str(error)
    assert "pw-value" not in str(error)


def test_auth_empty_token_is_rejected(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {auth: {token: ""}}}')
    assert problem_at(error, "gateway.auth.token") == (
        "expected a non-empty string, got a blank string"
    )


def test_auth_unknown_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{gateway: {auth: {allowTailscale: true}}}")
    assert problem_at(error, "gateway.auth.allowTailscale").startswith("unknown key")


def test_rate_limit_fields(tmp_path: Path) -> None:
    text = """{gateway: {auth: {rateLimit: {
        maxAttempts: 0, windowMs: -5, lockoutMs: 1.5, exemptLoopback: 1, burst: 2}}}}"""
    error = load_error(tmp_path, text)
    base = "gateway.auth.rateLimit"
    assert problem_at(error, f"{base}.maxAttempts") == "expected a positive integer, got integer 0"
    assert problem_at(error, f"{base}.windowMs") == "expected a positive integer, got integer -5"
    assert problem_at(error, f"{base}.lockoutMs") == "expected a positive integer, got number 1.5"
    assert problem_at(error, f"{base}.exemptLoopback") == "expected true or false, got integer 1"
    assert problem_at(error, f"{base}.burst").startswith("unknown key")


def test_rate_limit_values_are_read(tmp_path: Path) -> None:
    text = """{gateway: {auth: {rateLimit: {
        maxAttempts: 3, windowMs: 1000, lockoutMs: 2000, exemptLoopback: false}}}}"""
    limit = load(tmp_path, text).config.gateway.auth.rate_limit
    assert (limit.max_attempts, limit.window_ms, limit.lockout_ms) == (3, 1000, 2000)
    assert limit.exempt_loopback is False


def test_trusted_proxies_must_be_ip_strings(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {trustedProxies: ["10.0.0.1", "10.0.0.0/8", 7]}}')
    assert '"10.0.0.0/8"' in problem_at(error, "gateway.trustedProxies[1]")
    assert problem_at(error, "gateway.trustedProxies[2]").endswith("got integer 7")
    assert problem_at(error, "gateway.trustedProxies[1]").startswith("expected an IP address")


def test_trusted_proxies_must_be_an_array(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {trustedProxies: "10.0.0.1"}}')
    assert problem_at(error, "gateway.trustedProxies") == 'expected an array, got string "10.0.0.1"'


def test_http_section(tmp_path: Path) -> None:
    text = """{gateway: {http: {maxBodyBytes: 0, endpoints: {chatCompletions: {enabled: 1},
        responses: {enabled: "yes", storeDays: 3}, embeddings: {}}}}}"""
    error = load_error(tmp_path, text)
    assert (
        problem_at(error, "gateway.http.maxBodyBytes")
        == "expected a positive integer, got integer 0"
    )
    assert problem_at(error, "gateway.http.endpoints.chatCompletions.enabled") == (
        "expected true or false, got integer 1"
    )
    assert problem_at(error, "gateway.http.endpoints.responses.enabled") == (
        'expected true or false, got string "yes"'
    )
    assert problem_at(error, "gateway.http.endpoints.responses.storeDays") == (
        "unknown key (expected one of: enabled)"
    )
    assert problem_at(error, "gateway.http.endpoints.embeddings") == (
        "unknown key (expected one of: chatCompletions, responses)"
    )


def test_http_values_are_read(tmp_path: Path) -> None:
    text = "{gateway: {http: {maxBodyBytes: 1024, endpoints: {chatCompletions: {enabled: true}}}}}"
    http = load(tmp_path, text).config.gateway.http
    assert (http.max_body_bytes, http.chat_completions_enabled) == (1024, True)
    assert http.responses_enabled is False  # each endpoint is off unless enabled
    text = "{gateway: {http: {endpoints: {responses: {enabled: true}}}}}"
    http = load(tmp_path, text).config.gateway.http
    assert (http.chat_completions_enabled, http.responses_enabled) == (False, True)


@pytest.mark.parametrize(("value", "got"), [("-1", "integer -1"), ("true", "boolean true")])
def test_shutdown_grace_must_be_a_non_negative_number(tmp_path: Path, value: str, got: str) -> None:
    error = load_error(tmp_path, f"{{gateway: {{shutdownGraceSeconds: {value}}}}}")
    assert problem_at(error, "gateway.shutdownGraceSeconds") == f"expected a number >= 0, got {got}"


def test_shutdown_grace_accepts_floats_and_zero(tmp_path: Path) -> None:
    assert (
        load(
            tmp_path, "{gateway: {shutdownGraceSeconds: 2.5}}"
        ).config.gateway.shutdown_grace_seconds
        == 2.5
    )
    assert (
        load(tmp_path, "{gateway: {shutdownGraceSeconds: 0}}").config.gateway.shutdown_grace_seconds
        == 0
    )


def test_shutdown_delay_defaults_to_zero_and_must_be_non_negative(tmp_path: Path) -> None:
    assert load(tmp_path, "{}").config.gateway.shutdown_delay_seconds == 0
    assert (
        load(
            tmp_path, "{gateway: {shutdownDelaySeconds: 1.5}}"
        ).config.gateway.shutdown_delay_seconds
        == 1.5
    )
    error = load_error(tmp_path, "{gateway: {shutdownDelaySeconds: -1}}")
    assert (
        problem_at(error, "gateway.shutdownDelaySeconds")
        == "expected a number >= 0, got integer -1"
    )


def test_control_ui_defaults_to_on_at_the_root(tmp_path: Path) -> None:
    ui = load(tmp_path, "{}").config.gateway.control_ui
    assert (ui.enabled, ui.base_path) == (True, "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('""', ""),
        ('"/"', ""),
        ('"/ui"', "/ui"),
        ('"/ui/"', "/ui"),
        ('"/team-a/chat.v2"', "/team-a/chat.v2"),
    ],
)
def test_control_ui_base_path_is_normalised(tmp_path: Path, value: str, expected: str) -> None:
    text = f"{{gateway: {{controlUi: {{enabled: false, basePath: {value}}}}}}}"
    ui = load(tmp_path, text).config.gateway.control_ui
    assert (ui.enabled, ui.base_path) == (False, expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"ui"', 'expected a path such as "/ui"'),
        ('"/a/../b"', 'expected a path such as "/ui"'),
        ('"/a//b"', 'expected a path such as "/ui"'),
        ('"/ui?x=1"', 'expected a path such as "/ui"'),
        ('"/ü"', 'expected a path such as "/ui"'),
        ('"/v1"', "expected a path outside the gateway's own"),
        ('"/metrics/ui"', "expected a path outside the gateway's own"),
        ('"/ws"', "expected a path outside the gateway's own"),
        ("5", 'expected a path such as "/ui", got integer 5'),
    ],
)
def test_bad_control_ui_base_paths(tmp_path: Path, value: str, message: str) -> None:
    error = load_error(tmp_path, f"{{gateway: {{controlUi: {{basePath: {value}}}}}}}")
    assert problem_at(error, "gateway.controlUi.basePath").startswith(message)


def test_control_ui_and_metrics_are_strict(tmp_path: Path) -> None:
    text = (
        '{gateway: {controlUi: {enabled: "yes", allowInsecureAuth: true}, '
        'metrics: {public: 1, path: "/m"}}}'
    )
    error = load_error(tmp_path, text)
    assert (
        problem_at(error, "gateway.controlUi.enabled") == 'expected true or false, got string "yes"'
    )
    assert problem_at(error, "gateway.controlUi.allowInsecureAuth").startswith("unknown key")
    assert problem_at(error, "gateway.metrics.public") == "expected true or false, got integer 1"
    assert problem_at(error, "gateway.metrics.path").startswith("unknown key")


def test_metrics_are_protected_unless_public(tmp_path: Path) -> None:
    assert load(tmp_path, "{}").config.gateway.metrics.public is False
    assert load(tmp_path, "{gateway: {metrics: {public: true}}}").config.gateway.metrics.public


# --- models --------------------------------------------------------------------------------

GOOD = {"baseUrl": "https://api.example.com/v1", "api": "openai-completions"}


def providers(**entries: object) -> str:
    """A config holding just these providers (JSON is valid JSON5)."""
    return json.dumps({"models": {"providers": entries}})


def with_models(*models: object) -> str:
    return providers(p={**GOOD, "models": list(models)})


def test_provider_is_read_with_lower_case_name(tmp_path: Path) -> None:
    text = """{models: {mode: "replace", providers: {MyLLM: {
        baseUrl: "http://127.0.0.1:8000/v1", api: "openai-completions", apiKey: "k",
        headers: {"X-Team": "a"},
        models: [{id: "m1", name: "M One", contextWindow: 4096, reasoning: true,
                  input: ["text"], cost: {input: 1}, compat: {}, api: "x", headers: {}}],
    }}}}"""
    (provider,) = load(tmp_path, text).config.models.providers
    assert provider.name == "myllm"
    assert provider.base_url == "http://127.0.0.1:8000/v1"
    assert provider.api == "openai-completions"
    assert provider.api_key == "k"
    assert provider.headers == (("X-Team", "a"),)
    (model,) = provider.models
    assert (model.id, model.name, model.context_window) == ("m1", "M One", 4096)
    assert model.max_tokens == 4096  # min(8192, contextWindow) when not given


def test_model_defaults(tmp_path: Path) -> None:
    text = with_models({"id": "a", "name": "A"})
    (model,) = load(tmp_path, text).config.models.providers[0].models
    assert (model.context_window, model.max_tokens) == (200_000, 8192)


def test_models_mode_enum(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{models: {mode: "append"}}')
    assert problem_at(error, "models.mode") == 'expected "merge" or "replace", got "append"'


@pytest.mark.parametrize("name", ["builtin", "BuiltIn"])
def test_builtin_provider_name_is_reserved(tmp_path: Path, name: str) -> None:
    error = load_error(tmp_path, providers(**{name: GOOD}))
    assert "reserved" in problem_at(error, f"models.providers.{name}")


def test_provider_names_clash_case_insensitively(tmp_path: Path) -> None:
    error = load_error(tmp_path, providers(OpenAI=GOOD, openai=GOOD))
    assert problem_at(error, "models.providers.openai") == (
        'duplicate provider name "openai" (also models.providers.OpenAI)'
    )


def test_provider_name_with_slash_is_rejected(tmp_path: Path) -> None:
    error = load_error(tmp_path, providers(**{"a/b": GOOD}))
    assert problem_at(error, "models.providers.a/b").startswith(
        'expected a provider name without "/"'
    )


def test_provider_required_fields(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{models: {providers: {p: {}}}}")
    assert problem_at(error, "models.providers.p.baseUrl") == "required key is missing"
    assert problem_at(error, "models.providers.p.api") == "required key is missing"


@pytest.mark.parametrize(
    ("url", "got"),
    [
        ('"ftp://h/v1"', 'string "ftp://h/v1"'),
        ('"localhost:8000"', 'string "localhost:8000"'),
        ("5", "integer 5"),
    ],
)
def test_provider_base_url_must_be_http(tmp_path: Path, url: str, got: str) -> None:
    text = f'{{models: {{providers: {{p: {{baseUrl: {url}, api: "openai-completions"}}}}}}}}'
    message = problem_at(load_error(tmp_path, text), "models.providers.p.baseUrl")
    if got.startswith("string"):
        assert message == f"expected an http:// or https:// URL, got {got}"
    else:
        assert message == f"expected a non-empty string, got {got}"


def test_provider_base_url_credentials_are_not_echoed(tmp_path: Path) -> None:
    text = (
        '{models: {providers: {p: {baseUrl: "ftp://user:pa55word@h", api: "openai-completions"}}}}'
    )
    error = load_error(tmp_path, text)
    assert problem_at(error, "models.providers.p.baseUrl") == (
        "expected an http:// or https:// URL, got string"
    )
    assert "pa55word" not in str(error)


def test_provider_api_kind_enum(tmp_path: Path) -> None:
    text = '{models: {providers: {p: {baseUrl: "http://h", api: "openai-responses"}}}}'
    assert problem_at(load_error(tmp_path, text), "models.providers.p.api") == (
        'expected "openai-completions" or "anthropic-messages", got "openai-responses"'
    )


def test_provider_secrets_of_wrong_type_are_not_echoed(tmp_path: Path) -> None:
    headers = {"Authorization": 131313, "X-Empty": ""}
    text = providers(p={**GOOD, "apiKey": 424242, "headers": headers})
    error = load_error(tmp_path, text)
    assert (
        problem_at(error, "models.providers.p.apiKey") == "expected a non-empty string, got integer"
    )
    assert problem_at(error, "models.providers.p.headers.Authorization") == (
        "expected a non-empty string, got integer"
    )
    assert "424242" not in str(error) and "131313" not in str(error)


def test_provider_unknown_key(tmp_path: Path) -> None:
    text = providers(p={**GOOD, "apikey": 1})
    assert problem_at(load_error(tmp_path, text), "models.providers.p.apikey") == (
        'unknown key (did you mean "apiKey"?)'
    )


def test_model_entries_are_checked(tmp_path: Path) -> None:
    text = with_models(
        {"name": "no id"},
        {"id": "", "name": "x"},
        {"id": "a", "name": "A", "contextWindow": 0, "maxTokens": 1.5, "top": 1},
        {"id": "a", "name": "again"},
        "m",
    )
    error = load_error(tmp_path, text)
    base = "models.providers.p.models"
    assert problem_at(error, f"{base}[0].id") == "required key is missing"
    assert problem_at(error, f"{base}[1].id") == "expected a non-empty string, got a blank string"
    assert (
        problem_at(error, f"{base}[2].contextWindow")
        == "expected a positive integer, got integer 0"
    )
    assert (
        problem_at(error, f"{base}[2].maxTokens") == "expected a positive integer, got number 1.5"
    )
    assert problem_at(error, f"{base}[2].top").startswith("unknown key")
    assert problem_at(error, f"{base}[4]") == 'expected an object, got string "m"'


def test_duplicate_model_ids(tmp_path: Path) -> None:
    text = with_models({"id": "a", "name": "A"}, {"id": "a", "name": "B"})
    assert problem_at(load_error(tmp_path, text), "models.providers.p.models[1].id") == (
        'duplicate model id "a" (also models.providers.p.models[0])'
    )


# --- agents --------------------------------------------------------------------------------


def test_agent_defaults_are_read(tmp_path: Path) -> None:
    text = f"""{{{PROVIDERS}agents: {{defaults: {{
        model: {{primary: "OpenAI/gpt-4o", fallbacks: ["local/q"]}},
        skipBootstrap: true, bootstrapMaxChars: 500, userTimezone: "Europe/Berlin",
        timeoutSeconds: 30, maxConcurrent: 2}}}}}}"""
    loaded = load(tmp_path, text)
    defaults = loaded.config.agents.defaults
    assert defaults.model.primary == "openai/gpt-4o"
    assert defaults.model.fallbacks == ("local/q",)
    assert any("skipBootstrap has no effect" in n for n in loaded.notices)
    assert (defaults.bootstrap_max_chars, defaults.timeout_seconds, defaults.max_concurrent) == (
        500,
        30,
        2,
    )
    assert defaults.user_timezone == "Europe/Berlin"


def test_agent_defaults_model_plain_string_is_primary(tmp_path: Path) -> None:
    text = "{" + PROVIDERS + 'agents: {defaults: {model: "local/q"}}}'
    model = load(tmp_path, text).config.agents.defaults.model
    assert (model.primary, model.fallbacks) == ("local/q", None)


def test_agent_defaults_problems(tmp_path: Path) -> None:
    text = """{agents: {defaults: {model: "gpt-4o", userTimezone: "Mars/Base", skipBootstrap: 0,
        bootstrapMaxChars: 0, timeoutSeconds: -1, maxConcurrent: 1.0, thinkingDefault: "low"}}}"""
    error = load_error(tmp_path, text)
    base = "agents.defaults"
    model = problem_at(error, f"{base}.model")
    assert model.startswith('expected a model ref like "provider/model", got "gpt-4o"')
    assert "openai/gpt-4o" in model  # the hint shows the expected form
    assert problem_at(error, f"{base}.userTimezone") == (
        'expected an IANA time zone such as "Europe/Berlin", got "Mars/Base"'
    )
    assert problem_at(error, f"{base}.skipBootstrap") == "expected true or false, got integer 0"
    assert problem_at(error, f"{base}.bootstrapMaxChars").endswith("got integer 0")
    assert problem_at(error, f"{base}.timeoutSeconds").endswith("got integer -1")
    assert problem_at(error, f"{base}.maxConcurrent").endswith("got number 1.0")
    assert problem_at(error, f"{base}.thinkingDefault").startswith("unknown key")


def test_model_choice_object_problems(tmp_path: Path) -> None:
    text = (
        """{agents: {defaults: {model: {primary: "/x", fallbacks: ["a/b", "c", 3], extra: 1}}}}"""
    )
    error = load_error(tmp_path, text)
    base = "agents.defaults.model"
    assert problem_at(error, f"{base}.primary").startswith(
        'expected a model ref like "provider/model"'
    )
    assert problem_at(error, f"{base}.fallbacks[1]").startswith("expected a model ref")
    assert problem_at(error, f"{base}.fallbacks[2]") == "expected a non-empty string, got integer 3"
    assert problem_at(error, f"{base}.extra").startswith("unknown key")


def test_model_choice_of_wrong_type(tmp_path: Path) -> None:
    error = load_error(tmp_path, "{agents: {defaults: {model: 5}}}")
    assert problem_at(error, "agents.defaults.model").endswith("got integer 5")


def test_agent_list_entries_are_read(tmp_path: Path) -> None:
    text = (
        "{"
        + PROVIDERS
        + """agents: {list: [
        {id: "main", default: true,
         identity: {name: "Molty", emoji: "x", theme: "t", avatar: "a.png"}},
        {id: "r", name: "R", model: "local/q"},
        {id: "s", model: {primary: "local/q", fallbacks: []}},
    ]}}"""
    )
    main, research, other = load(tmp_path, text).config.agents.list
    assert main.default is True
    assert main.identity is not None
    assert (main.identity.name, main.identity.emoji, main.identity.avatar) == (
        "Molty",
        "x",
        "a.png",
    )
    assert research.default is False
    assert research.name == "R"
    assert research.model is not None
    assert (research.model.primary, research.model.fallbacks) == ("local/q", None)
    assert other.model is not None
    assert other.model.fallbacks == ()


def test_agent_list_problems(tmp_path: Path) -> None:
    text = """{agents: {list: [
        {name: "no id"}, 7, {id: 5},
        {id: "a", default: "yes", identity: {nick: "n"}, agentDir: "x"},
    ]}}"""
    error = load_error(tmp_path, text)
    assert problem_at(error, "agents.list[0].id") == "required key is missing"
    assert problem_at(error, "agents.list[1]") == "expected an object, got integer 7"
    assert problem_at(error, "agents.list[2].id") == "expected a non-empty string, got integer 5"
    assert problem_at(error, "agents.list[3].default") == 'expected true or false, got string "yes"'
    assert problem_at(error, "agents.list[3].identity.nick").startswith("unknown key")
    assert problem_at(error, "agents.list[3].agentDir").startswith("unknown key")


def test_agent_list_must_be_an_array(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{agents: {list: {id: "a"}}}')
    assert problem_at(error, "agents.list") == "expected an array, got object"


def test_duplicate_agent_ids_after_normalisation(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{agents: {list: [{id: "Main"}, {id: "x"}, {id: " main "}]}}')
    assert (
        problem_at(error, "agents.list[2].id") == 'duplicate agent id "main" (also agents.list[0])'
    )


# --- session and logging -------------------------------------------------------------------


def test_session_store(tmp_path: Path) -> None:
    assert load(tmp_path, '{session: {store: "/data/s.sqlite"}}').config.session.store == Path(
        "/data/s.sqlite"
    )
    error = load_error(tmp_path, '{session: {store: 5, reset: {mode: "daily"}}}')
    assert problem_at(error, "session.store") == "expected a non-empty string, got integer 5"
    assert problem_at(error, "session.reset").startswith("unknown key")


def test_logging(tmp_path: Path) -> None:
    logging = load(tmp_path, '{logging: {level: "trace", format: "json"}}').config.logging
    assert (logging.level, logging.format) == ("trace", "json")
    error = load_error(tmp_path, '{logging: {level: "warning", format: "text", file: "x"}}')
    assert problem_at(error, "logging.level") == (
        'expected "silent", "fatal", "error", "warn", "info", "debug" or "trace", got "warning"'
        ' (did you mean "warn"?)'
    )
    assert problem_at(error, "logging.format") == 'expected "auto", "pretty" or "json", got "text"'
    assert problem_at(error, "logging.file").startswith("unknown key")


def test_model_refs_must_name_a_configured_provider(tmp_path: Path) -> None:
    text = (
        "{"
        + PROVIDERS
        + """agents: {defaults: {model: {primary: "local/q",
        fallbacks: ["builtin/echo", "ghost/m"]}}, list: [{id: "a", model: "nope/x"}]}}"""
    )
    error = load_error(tmp_path, text)
    assert problem_at(error, "agents.defaults.model.fallbacks[1]").startswith(
        'unknown provider "ghost" in "ghost/m"; configured: local, openai, builtin'
    )
    assert problem_at(error, "agents.list[0].model.primary").startswith('unknown provider "nope"')
    assert len(error.problems) == 2


# --- browsers and connections ----------------------------------------------------------------


def test_allowed_origins_are_normalised(tmp_path: Path) -> None:
    text = """{gateway: {allowedOrigins: [
        "https://Chat.Example.com", "http://localhost:3000/", "https://a.example:443",
        "http://[::1]:8080", "http://127.0.0.1:80"]}}"""
    assert load(tmp_path, text).config.gateway.allowed_origins == (
        "https://chat.example.com",
        "http://localhost:3000",
        "https://a.example",
        "http://[::1]:8080",
        "http://127.0.0.1",
    )


@pytest.mark.parametrize(
    "origin",
    [
        "chat.example.com",
        "ftp://chat.example.com",
        "https://chat.example.com/app",
        "https://chat.example.com?x=1",
        "https://user:pw@chat.example.com",
        "https://chat.example.com:99999",
        "null",
        "https://",
    ],
)
def test_allowed_origins_must_be_scheme_host_and_port(tmp_path: Path, origin: str) -> None:
    error = load_error(tmp_path, json.dumps({"gateway": {"allowedOrigins": [origin]}}))
    assert problem_at(error, "gateway.allowedOrigins[0]").startswith(
        'expected an origin such as "https://chat.example.com"'
    )


def test_a_wildcard_origin_is_refused_with_a_hint(tmp_path: Path) -> None:
    error = load_error(tmp_path, '{gateway: {allowedOrigins: ["*"]}}')
    assert "wildcards are not supported" in problem_at(error, "gateway.allowedOrigins[0]")


def test_allowed_hosts_are_normalised(tmp_path: Path) -> None:
    text = '{gateway: {allowedHosts: ["Gateway.Example.com", "10.0.0.5", "2001:db8::1", "[::2]"]}}'
    assert load(tmp_path, text).config.gateway.allowed_hosts == (
        "gateway.example.com",
        "10.0.0.5",
        "[2001:db8::1]",
        "[::2]",
    )


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("https://gateway.example.com", "(a host name, not a URL)"),
        ("gateway.example.com:443", "(without a port: any port is accepted)"),
        ("bad host", ""),
        ("*.example.com", ""),
    ],
)
def test_allowed_hosts_must_be_names(tmp_path: Path, host: str, hint: str) -> None:
    error = load_error(tmp_path, json.dumps({"gateway": {"allowedHosts": [host]}}))
    message = problem_at(error, "gateway.allowedHosts[0]")
    assert message.startswith('expected a host name such as "gateway.example.com"')
    assert hint in message


def test_limits_are_read_and_checked(tmp_path: Path) -> None:
    text = """{gateway: {limits: {maxConnections: 500, maxConnectionsPerIp: 50,
        headersTimeoutSeconds: 5, bodyTimeoutSeconds: 120.5}}}"""
    limits = load(tmp_path, text).config.gateway.limits
    assert (limits.max_connections, limits.max_connections_per_ip) == (500, 50)
    assert (limits.headers_timeout_seconds, limits.body_timeout_seconds) == (5.0, 120.5)
    text = """{gateway: {limits: {maxConnections: 0, maxConnectionsPerIp: "10",
        headersTimeoutSeconds: 0.5, bodyTimeoutSeconds: -1, maxHandshakes: 1}}}"""
    error = load_error(tmp_path, text)
    def problem(key: str) -> str:
        return problem_at(error, f"gateway.limits.{key}")

    assert problem("maxConnections") == "expected a positive integer, got integer 0"
    assert problem("maxConnectionsPerIp").startswith("expected a positive integer")
    assert problem("headersTimeoutSeconds") == "expected a number >= 1, got number 0.5"
    assert problem("bodyTimeoutSeconds").startswith("expected a number >= 1")
    assert problem("maxHandshakes").startswith("unknown key")
