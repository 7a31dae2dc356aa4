"""Slack mrkdwn as reviewer-facing HTML: Slack's formatting where it is safe, inert text everywhere else."""

from __future__ import annotations

import random
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.template import Context, Template
from django.utils.safestring import SafeString

from approvals.slack.mrkdwn import mrkdwn_to_html

LINK = 'rel="noopener noreferrer nofollow" target="_blank"'


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("plain", "plain"),
        ("*bold* _italic_ ~strike~", "<strong>bold</strong> <em>italic</em> <del>strike</del>"),
        ("*_both_* and _*x*_", "<strong><em>both</em></strong> and <em><strong>x</strong></em>"),
        ("snake_case_name 2*3*4 a*b", "snake_case_name 2*3*4 a*b"),
        ("* not bold * and *not\nbold*", "* not bold * and *not<br>bold*"),
        ("`*code*` stays", '<code class="mrkdwn-code">*code*</code> stays'),
        ("```\nline 1\n  *line* 2\n```", '<pre class="mrkdwn-pre">line 1\n  *line* 2</pre>'),
        ("one\ntwo", "one<br>two"),
        ("> quoted\n> two\nafter", '<blockquote class="mrkdwn-quote">quoted<br>two</blockquote>after'),
        (">>> all\nof this", '<blockquote class="mrkdwn-quote">all<br>of this</blockquote>'),
        (
            "<https://grafana.example/d?a=1&b=2|the *dashboard*>",
            '<a href="https://grafana.example/d?a=1&amp;b=2" title="https://grafana.example/d?a=1&amp;b=2" '
            f"{LINK}>the <strong>dashboard</strong></a>",
        ),
        ("<http://x.example>", f'<a href="http://x.example" title="http://x.example" {LINK}>http://x.example</a>'),
        ("<@U0ALICE>", '<span class="mrkdwn-mention" title="U0ALICE">@U0ALICE</span>'),
        ("<@U0ALICE|alice>", '<span class="mrkdwn-mention" title="U0ALICE">@alice</span>'),
        ("<#C0INFRA01|infra-help>", '<span class="mrkdwn-channel" title="C0INFRA01">#infra-help</span>'),
        (
            "<!here> <!channel>",
            '<span class="mrkdwn-mention mrkdwn-broadcast">@here</span> '
            '<span class="mrkdwn-mention mrkdwn-broadcast">@channel</span>',
        ),
        ("<mailto:a@b.example|mail me> <!nonsense>", "&lt;mailto:a@b.example|mail me&gt; &lt;!nonsense&gt;"),
        ("a &lt;b&gt; &amp; c", "a &lt;b&gt; &amp; c"),  # Slack's own escapes show as the characters
        ("Tom & \"Jerry\" 'x'", "Tom &amp; &quot;Jerry&quot; &#x27;x&#x27;"),
    ],
)
def test_renders_like_slack(text, html):
    rendered = mrkdwn_to_html(text)
    assert isinstance(rendered, SafeString)
    assert rendered == html


HOSTILE = [
    "<script>alert(1)</script>",
    '"><script>alert(1)</script>',
    "<img src=x onerror=alert(1)>",
    '"<img onerror=alert(1) src=x>"',
    "<javascript:alert(1)|click me>",
    "<JaVaScRiPt:alert(1)>",
    "< javascript:alert(1)|x>",
    "<data:text/html;base64,PHNjcmlwdD4=|x>",
    "<vbscript:msgbox(1)|x>",
    "<//evil.example|x>",
    '<https://ok.example/" onmouseover="alert(1)|hover>',
    "<https://ok.example/'onmouseover='alert(1)|hover>",
    "<https://ok.example|<img src=x onerror=alert(1)>>",
    '<https://ok.example|x" onclick="alert(1)>',
    "<http://evil\u202eelpmaxe.com|x>",
    "<@U1|<script>x</script>>",
    '<#C123|"><svg onload=alert(1)>>',
    "`<script>alert(1)</script>`",
    "```<iframe src=javascript:alert(1)>```",
    "*<b onmouseover=alert(1)>*",
    "> <style>*{display:none}</style>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&amp;lt;script&amp;gt;",
    "\x00<script>\x00",
    "\x000\x00",
    "<!subteam^S1|<img src=x onerror=alert(1)>>",
    "<!date^1392734382^{date}|<script>>",
]

ALLOWED_TAGS = {"a", "strong", "em", "del", "code", "pre", "blockquote", "br", "span"}
ALLOWED_ATTRS = {"href", "title", "rel", "target", "class"}


class _Inspector(HTMLParser):
    """Everything a browser would build from the output: tags, attributes, text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text += data


def inspect(html: str) -> _Inspector:
    parser = _Inspector()
    parser.feed(html)
    parser.close()
    return parser


def assert_inert(html: str) -> None:
    parsed = inspect(html)
    for tag, attrs in parsed.tags:
        assert tag in ALLOWED_TAGS, (tag, html)
        assert set(attrs) <= ALLOWED_ATTRS, (attrs, html)
        if tag == "a":
            url = attrs["href"]
            assert urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc, html
            assert attrs["rel"] == "noopener noreferrer nofollow"
            assert not any(ch.isspace() or ch in "\u202e\u202d\x00" for ch in url), html
            assert attrs["title"] == url  # the real address is always visible on hover
    assert "\u202e" not in html and "\x00" not in html


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_stays_inert(text):
    html = mrkdwn_to_html(text)
    assert_inert(html)
    assert "<script" not in html and "<img" not in html and "<svg" not in html and "<iframe" not in html
    assert "javascript:" not in "".join(a.get("href", "") for _, a in inspect(html).tags).lower()


def test_script_is_shown_as_text():
    html = mrkdwn_to_html("<script>alert(1)</script>")
    assert html == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert inspect(html).text == "<script>alert(1)</script>"


def test_an_attribute_breakout_in_a_url_stays_inside_the_href():
    html = mrkdwn_to_html('<https://ok.example/"onmouseover="alert(1)|hover>')
    [(tag, attrs)] = inspect(html).tags
    assert tag == "a" and attrs["href"] == 'https://ok.example/"onmouseover="alert(1)'
    assert "onmouseover" not in attrs
    # With a space it is no URL at all: plain text.
    assert inspect(mrkdwn_to_html('<https://ok.example/" onmouseover="x|y>')).tags == []


def test_javascript_links_are_left_as_text():
    html = mrkdwn_to_html("<javascript:alert(1)|click me>")
    assert inspect(html).tags == []
    assert inspect(html).text == "<javascript:alert(1)|click me>"


def test_bidi_overrides_are_made_visible_not_obeyed():
    html = mrkdwn_to_html("approve invoice\u202egpj.exe please")
    assert "\u202e" not in html
    assert '<span class="invisible-char" title="U+202E RIGHT-TO-LEFT OVERRIDE">⟨U+202E⟩</span>' in html
    assert inspect(html).text == "approve invoice⟨U+202E⟩gpj.exe please"
    assert "⟨U+2066⟩" in mrkdwn_to_html("`a\u2066b`")  # inside code too
    assert "⟨U+200B⟩" in mrkdwn_to_html("zero\u200bwidth")  # and every other invisible character
    assert "⟨Cyrillic \u0430 U+0430⟩" in mrkdwn_to_html("post to #prod-\u0430dmins")  # look-alike letters flagged


def test_labels_cannot_hide_where_a_link_goes():
    [(_, attrs)] = inspect(mrkdwn_to_html("<https://evil.example|https://bank.example>")).tags
    assert attrs["href"] == attrs["title"] == "https://evil.example"


def test_random_mixes_of_markup_stay_inert_and_keep_the_text():
    rng = random.Random(20240611)
    pieces = [
        "<",
        ">",
        "|",
        "*",
        "_",
        "~",
        "`",
        "```",
        "&",
        "&lt;",
        "\n",
        ">",
        ">>>",
        '"',
        "'",
        "=",
        " ",
        "http://a.example",
        "https://b.example/x?y=1&z=2",
        "javascript:",
        "@U1",
        "#C1",
        "!here",
        "a",
        "é",
        "\u202e",
        "\x00",
        "onerror",
        "script",
        "0",
    ]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        html = mrkdwn_to_html(text)
        assert_inert(html)


def test_the_template_filter_escapes_whatever_it_is_given():
    template = Template("{% load countersign %}<div>{{ text|mrkdwn }}</div>")
    rendered = template.render(Context({"text": "*hi* <script>x</script>"}))
    assert rendered == "<div><strong>hi</strong> &lt;script&gt;x&lt;/script&gt;</div>"
    assert Template("{% load countersign %}{{ missing|mrkdwn }}").render(Context({})) == ""
    assert Template("{% load countersign %}{{ n|mrkdwn }}").render(Context({"n": 7})) == "7"
