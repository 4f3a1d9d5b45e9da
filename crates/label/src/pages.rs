//! The server-rendered pages. No inline script or style (the Content-Security-Policy forbids both): the
//! look is `/static/app.css`, the keyboard shortcuts `/static/app.js`.

use crate::assign::{Progress, Task};
use crate::auth::Session;
use crate::html::{esc, turns};
use crate::stats::{Interval, Stats};

/// The common frame of every page.
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head>\n<body>\n{body}\n</body></html>\n",
        esc(title)
    )
}

/// Shown for any protected route without a valid session.
pub fn need_login() -> String {
    layout(
        "Login needed",
        "<main class=\"notice\"><h1>You need a login link</h1><p>This labelling server only admits people with a \
         personal login link. Ask whoever runs it for one (they create it with <code>mismatch label \
         add-annotator</code>), then open it in this browser.</p></main>",
    )
}

/// Shown for a login link whose token is unknown (mistyped, or rotated).
pub fn bad_login() -> String {
    layout(
        "Login link not valid",
        "<main class=\"notice\"><h1>This login link is not valid</h1><p>It may have been replaced by a newer one. \
         Ask whoever runs this server for a new link.</p></main>",
    )
}

/// After a successful login. The page forwards itself to the task (app.js, `data-next`): a navigation started
/// by this page is same-site, so the SameSite=Strict cookie is sent even when the link was opened from an
/// e-mail or chat (a redirect from a cross-site click would not carry it).
pub fn logged_in(s: &Session) -> String {
    let dash = if s.admin { " or the <a href=\"/dashboard\">dashboard</a>" } else { "" };
    layout(
        "Signed in",
        &format!(
            "<main class=\"notice\" id=\"next\" data-next=\"/task\"><h1>Signed in as {}</h1>\
             <p>Go to <a href=\"/task\">the labelling page</a>{dash}.</p></main>",
            esc(&s.name)
        ),
    )
}

/// A page for errors (403, 404, 400, 500): the message is escaped.
pub fn error(title: &str, message: &str) -> String {
    layout(title, &format!("<main class=\"notice\"><h1>{}</h1><p>{}</p></main>", esc(title), esc(message)))
}

fn header(s: &Session) -> String {
    let dash = if s.admin { "<a href=\"/dashboard\">Dashboard</a> · " } else { "" };
    format!(
        "<header><span>Signed in as <b>{}</b></span><span>{dash}<a href=\"/task\">Label</a> · \
         <form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" \
         value=\"{}\"><button type=\"submit\" class=\"link\">Log out</button></form></span></header>",
        esc(&s.name),
        esc(&s.csrf)
    )
}

fn progress_bar(p: &Progress) -> String {
    let total = p.labelled + p.remaining;
    format!(
        "<div class=\"progress\"><progress id=\"progress\" value=\"{}\" max=\"{}\"></progress> \
         <span id=\"progress-text\">{} labelled, {} to go</span>{}</div>",
        p.labelled,
        total.max(1),
        p.labelled,
        p.remaining,
        if p.skipped > 0 { format!(" <span class=\"muted\">({} skipped)</span>", p.skipped) } else { String::new() }
    )
}

/// The labelling page for one pair; `None`: nothing left for this annotator.
pub fn task(s: &Session, task: Option<&Task>, p: &Progress) -> String {
    let Some(t) = task else {
        return layout(
            "All done",
            &format!(
                "{}<main>{}<h1>Nothing left to label</h1><p>Every item has either been shown to you or been \
                 labelled by enough people. Thank you.</p></main>",
                header(s),
                progress_bar(p),
            ),
        );
    };
    let hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"item\" value=\"{}\">",
        esc(&s.csrf),
        t.item
    );
    let strength =
        [(4, "significantly better"), (3, "better"), (2, "slightly better"), (1, "negligibly better / unsure")]
            .iter()
            .map(|(v, l)| format!("<label><input type=\"radio\" name=\"strength\" value=\"{v}\"> {l}</label>"))
            .collect::<String>();
    let body = format!(
        "{header}<main>{progress}\
         <section class=\"prompt\"><h2>Prompt</h2>{prompt}</section>\
         <div class=\"pair\"><section class=\"response\" id=\"left\"><h2>Response A</h2>{left}</section>\
         <section class=\"response\" id=\"right\"><h2>Response B</h2>{right}</section></div>\
         <form method=\"post\" action=\"/label\" id=\"label-form\">{hidden}\
         <fieldset class=\"strength\"><legend>How much better is the one you pick? (optional)</legend>{strength}\
         </fieldset>\
         <label class=\"reason\">Reason (optional)<textarea name=\"reason\" rows=\"2\" maxlength=\"2000\"></textarea>\
         </label>\
         <div class=\"buttons\">\
         <button type=\"submit\" name=\"choice\" value=\"left\" data-keys=\"1 a\">A is better <kbd>1</kbd></button>\
         <button type=\"submit\" name=\"choice\" value=\"right\" data-keys=\"2 b\">B is better <kbd>2</kbd></button>\
         <button type=\"submit\" name=\"choice\" value=\"tie\" data-keys=\"3 t\">Tie <kbd>3</kbd></button>\
         <button type=\"submit\" name=\"choice\" value=\"both_bad\" data-keys=\"4 x\">Both bad <kbd>4</kbd></button>\
         </div></form>\
         <form method=\"post\" action=\"/skip\" id=\"skip-form\">{hidden}\
         <button type=\"submit\" class=\"secondary\" data-keys=\"s\">Skip <kbd>s</kbd></button></form>\
         <p class=\"keys\">Keyboard: <kbd>1</kbd> or <kbd>a</kbd> A is better, <kbd>2</kbd> or <kbd>b</kbd> B is \
         better, <kbd>3</kbd> or <kbd>t</kbd> tie, <kbd>4</kbd> or <kbd>x</kbd> both bad, <kbd>s</kbd> skip \
         (not while typing a reason). Pick a strength first if you want to give one.</p></main>",
        header = header(s),
        progress = progress_bar(p),
        prompt = turns(&t.prompt),
        left = turns(&t.left),
        right = turns(&t.right),
    );
    layout("Label", &body)
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
}

fn ci(x: &Option<Interval>, as_pct: bool) -> String {
    let Some(i) = x else { return "–".into() };
    let f = |v: Option<f64>| if as_pct { pct(v) } else { num(v, 3) };
    format!("{} <span class=\"muted\">[95% CI {}, {}; {} items]</span>", f(Some(i.value)), f(i.lo), f(i.hi), i.n)
}

/// The admin dashboard.
pub fn dashboard(s: &Session, st: &Stats) -> String {
    let choices = st.choices.iter().map(|(k, v)| format!("{} {}", esc(k), v)).collect::<Vec<_>>().join(", ");
    let people = st
        .annotators
        .iter()
        .map(|a| {
            format!(
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} <span class=\"muted\">({} cases)</span></td>\
                 <td>{} <span class=\"muted\">({} decisive)</span></td></tr>",
                esc(&a.name),
                if a.admin { " <span class=\"muted\">(admin)</span>" } else { "" },
                a.labels,
                a.skipped,
                a.median_time_ms.map_or("–".into(), |t| format!("{:.1} s", t / 1000.0)),
                pct(a.majority_agreement),
                a.majority_cases,
                pct(a.left_rate),
                a.decisive
            )
        })
        .collect::<String>();
    let pairs = st
        .pairs
        .iter()
        .map(|p| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.a),
                esc(&p.b),
                p.items,
                pct(Some(p.agreement))
            )
        })
        .collect::<String>();
    let body = format!(
        "{header}<main class=\"dashboard\"><h1>Dashboard</h1>\
         <p>{items} items, {labels} labels ({choices}); {complete} items have their {k} labels.</p>\
         <table class=\"summary\">\
         <tr><th>Pairwise agreement</th><td>{pairwise}</td><td class=\"muted\">share of annotator pairs on an item \
         giving the same label</td></tr>\
         <tr><th>Fleiss' κ</th><td>{kappa}</td><td class=\"muted\">agreement beyond chance over items with exactly \
         {k} labels, four categories (Fleiss 1971); 0 chance, 1 perfect</td></tr>\
         <tr><th>Accuracy ceiling</th><td>{ceiling}</td><td class=\"muted\">how often a decisive label matches the \
         decisive majority of the other annotators</td></tr>\
         <tr><th>Position bias</th><td>{left} <span class=\"muted\">({decisive} decisive labels)</span></td>\
         <td class=\"muted\">share of decisive labels choosing the left-shown response; 50% is none</td></tr>\
         </table>\
         <h2>Annotators</h2><table><tr><th>Name</th><th>Labels</th><th>Skipped</th><th>Median time</th>\
         <th>Agreement with the others' majority</th><th>Chose left</th></tr>{people}</table>\
         <h2>Pairs of annotators</h2><table><tr><th>A</th><th>B</th><th>Items both labelled</th>\
         <th>Agreement</th></tr>{pairs}</table>\
         <p class=\"muted\">Intervals: percentile bootstrap over items, {b} resamples, seed {seed}. \
         The same numbers as JSON: <a href=\"/api/stats\">/api/stats</a>.</p></main>",
        header = header(s),
        items = st.items,
        labels = st.labels,
        complete = st.items_complete,
        k = st.per_item,
        pairwise = ci(&st.pairwise_agreement, true),
        kappa = ci(&st.fleiss_kappa, false),
        ceiling = ci(&st.ceiling, true),
        left = pct(st.position_bias),
        decisive = st.decisive,
        b = st.bootstrap,
        seed = st.seed,
    );
    layout("Dashboard", &body)
}
