//! `/api/v1/admin/usage` (the usage report, JSON or CSV) and the monthly output-token
//! budgets of tenants and keys (`PATCH /api/v1/admin/tenants/{id}`, `/keys/{id}`). Scoped
//! as every admin route: a tenant admin sees and acts on its own tenant only.

use std::fmt::Write as _;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};

use super::admin::listing_scope;
use super::table::Routes;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::usage::{
    is_day, now_ms, utc_day, utc_month_start, UsageGroup, UsageQuery, UsageRow, UsageTotals,
};

/// How long a budget change waits for this hub's counters to take it (they reload from the
/// store; the other hubs of a cluster within `usage::REFRESH_EVERY`).
const APPLY_BUDGET_WITHIN: Duration = Duration::from_secs(5);

pub fn configure(routes: &mut Routes) {
    routes.scope("/admin", |r| {
        r.get("/usage", usage)
            .patch("/tenants/{id}", set_tenant_budget)
            .patch("/keys/{id}", set_key_budget);
    });
}

/// `GET /admin/usage`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct UsageParams {
    /// First UTC day (`YYYY-MM-DD`), included; the first day of this month when absent.
    from: Option<String>,
    /// Last UTC day (`YYYY-MM-DD`), included; today (UTC) when absent.
    to: Option<String>,
    /// Comma-separated among `tenant`, `key`, `provider`, `model`, `day`, `transport`;
    /// `day` when absent.
    group_by: Option<String>,
    /// An operator's choice of one tenant; a tenant admin always sees its own.
    tenant_id: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

/// Figures of one group (or of all, in `totals`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageFigures {
    pub answers: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Answers whose input count is the hub's estimate (the provider reported none).
    pub input_tokens_estimated: i64,
    /// Answers whose output count is the hub's count of text deltas (the provider
    /// reported none).
    pub output_tokens_counted: i64,
    /// Answers that ended with an error.
    pub errors: i64,
    /// Answers stopped before their end (by the client, an administrator, a shutdown, or
    /// nobody resuming them in time).
    pub cancelled: i64,
    /// Answers whose connection was lost while they ran.
    pub detached: i64,
    /// Detached answers a client came back for.
    pub resumed: i64,
    /// Mean time to the first token, over the answers that had one.
    pub ttft_ms_avg: Option<u64>,
    pub duration_ms_avg: Option<u64>,
}

impl From<&UsageTotals> for UsageFigures {
    fn from(t: &UsageTotals) -> Self {
        let avg = |sum: i64, n: i64| (n > 0).then(|| u64::try_from(sum / n).unwrap_or(0));
        UsageFigures {
            answers: t.answers,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            input_tokens_estimated: t.input_estimated,
            output_tokens_counted: t.output_counted,
            errors: t.errors,
            cancelled: t.cancelled,
            detached: t.detached,
            resumed: t.resumed,
            ttft_ms_avg: avg(t.ttft_ms_sum, t.ttft_count),
            duration_ms_avg: avg(t.duration_ms_sum, t.answers),
        }
    }
}

/// One row of the report: the group's fields (those of `groupBy`: `tenantId`, `keyId`,
/// `provider`, `model`, `day`, `transport`), then its figures.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReportRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(flatten)]
    pub figures: UsageFigures,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    /// The tenant reported on; absent: every tenant (an operator's report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub group_by: Vec<String>,
    pub rows: Vec<UsageReportRow>,
    pub totals: UsageFigures,
}

fn report_row(group_by: &[UsageGroup], row: &UsageRow) -> UsageReportRow {
    let mut out = UsageReportRow {
        tenant_id: None,
        key_id: None,
        provider: None,
        model: None,
        day: None,
        transport: None,
        figures: UsageFigures::from(&row.totals),
    };
    for (group, value) in group_by.iter().zip(&row.groups) {
        let slot = match group {
            UsageGroup::Tenant => &mut out.tenant_id,
            UsageGroup::Key => &mut out.key_id,
            UsageGroup::Provider => &mut out.provider,
            UsageGroup::Model => &mut out.model,
            UsageGroup::Day => &mut out.day,
            UsageGroup::Transport => &mut out.transport,
        };
        *slot = Some(value.clone());
    }
    out
}

fn parse_day(name: &str, value: Option<&str>, default: String) -> Result<String, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some(day) if is_day(day) => Ok(day.to_owned()),
        Some(other) => Err(ApiError::bad_request(
            "invalid_date",
            format!("`{name}` must be a UTC day written YYYY-MM-DD, not `{other}`"),
        )),
    }
}

fn parse_group_by(value: Option<&str>) -> Result<Vec<UsageGroup>, ApiError> {
    let raw = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("day");
    let mut groups = Vec::new();
    for name in raw.split(',').map(str::trim) {
        let known = UsageGroup::ALL.map(UsageGroup::name).join(", ");
        let group = UsageGroup::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_group_by",
                format!("`groupBy` takes a comma-separated list of {known}; not `{name}`"),
            )
        })?;
        if groups.contains(&group) {
            return Err(ApiError::bad_request(
                "invalid_group_by",
                format!("`groupBy` names `{name}` twice"),
            ));
        }
        groups.push(group);
    }
    Ok(groups)
}

/// Usage per group over a range of UTC days
///
/// Every answer's tenant, key, transport, provider, model, input and output tokens, time
/// to first token, duration and outcome are recorded when it ends (within about a second),
/// and summed here per group. `format=csv` gives the same rows as a CSV download.
#[utoipa::path(
    operation_id = "admin_usage",
    get,
    path = "/api/v1/admin/usage",
    tag = "admin",
    params(UsageParams),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The report (or with `format=csv`, `text/csv` with a header row, as an attachment)", body = UsageReport),
        (status = 400, description = "Bad parameter: the code names it (invalid_date, invalid_range, invalid_group_by, invalid_format)", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn usage(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    params: web::Query<UsageParams>,
) -> Result<HttpResponse, ApiError> {
    let now = now_ms();
    let from = parse_day("from", params.from.as_deref(), utc_month_start(now))?;
    let to = parse_day("to", params.to.as_deref(), utc_day(now))?;
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("`from` ({from}) is after `to` ({to})"),
        ));
    }
    let group_by = parse_group_by(params.group_by.as_deref())?;
    let csv = match params.format.as_deref().map(str::trim) {
        None | Some("") | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("`format` is json or csv, not `{other}`"),
            ))
        }
    };
    let filter = super::admin::TenantFilter {
        tenant_id: params.tenant_id.clone(),
    };
    let tenant_id = listing_scope(&state, &admin, &filter).await?;
    let query = UsageQuery {
        from_day: from.clone(),
        to_day: to.clone(),
        tenant_id: tenant_id.clone(),
        group_by: group_by.clone(),
    };
    let rows = state.store.usage_report(&query).await?;
    let mut totals = UsageTotals::default();
    for row in &rows {
        totals.add(&row.totals);
    }
    let rows: Vec<UsageReportRow> = rows.iter().map(|r| report_row(&group_by, r)).collect();
    if csv {
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"ragstream-usage-{from}-{to}.csv\""),
            ))
            .body(to_csv(&group_by, &rows)));
    }
    Ok(HttpResponse::Ok().json(UsageReport {
        from,
        to,
        tenant_id,
        group_by: group_by.iter().map(|g| g.name().to_owned()).collect(),
        rows,
        totals: UsageFigures::from(&totals),
    }))
}

const CSV_FIGURES: [&str; 11] = [
    "answers",
    "inputTokens",
    "outputTokens",
    "inputTokensEstimated",
    "outputTokensCounted",
    "errors",
    "cancelled",
    "detached",
    "resumed",
    "ttftMsAvg",
    "durationMsAvg",
];

/// One CSV field (RFC 4180 quoting). Text that a spreadsheet would run as a formula gets a
/// leading `'`: model names and the like are chosen by clients.
fn csv_field(out: &mut String, value: &str) {
    let guarded;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{value}");
        guarded.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn to_csv(group_by: &[UsageGroup], rows: &[UsageReportRow]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = group_by
        .iter()
        .map(|g| g.field())
        .chain(CSV_FIGURES)
        .collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for row in rows {
        for group in group_by {
            let value = match group {
                UsageGroup::Tenant => &row.tenant_id,
                UsageGroup::Key => &row.key_id,
                UsageGroup::Provider => &row.provider,
                UsageGroup::Model => &row.model,
                UsageGroup::Day => &row.day,
                UsageGroup::Transport => &row.transport,
            };
            csv_field(&mut out, value.as_deref().unwrap_or(""));
            out.push(',');
        }
        let f = &row.figures;
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}\r\n",
            f.answers,
            f.input_tokens,
            f.output_tokens,
            f.input_tokens_estimated,
            f.output_tokens_counted,
            f.errors,
            f.cancelled,
            f.detached,
            f.resumed,
            opt(f.ttft_ms_avg),
            opt(f.duration_ms_avg),
        );
    }
    out
}

/// A field that may be sent as `null`: `None` when absent, `Some(None)` for `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BudgetChange {
    /// Output tokens per calendar month (UTC), from 0; `null` removes the budget.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, required = true)]
    monthly_output_token_budget: Option<Option<i64>>,
}

fn budget_of(change: &BudgetChange) -> Result<Option<i64>, ApiError> {
    match change.monthly_output_token_budget {
        None => Err(ApiError::bad_request(
            "invalid_request",
            "send monthlyOutputTokenBudget: a number of tokens, or null for no budget",
        )),
        Some(Some(n)) if n < 0 => Err(ApiError::bad_request(
            "invalid_budget",
            "monthlyOutputTokenBudget must be 0 or more (or null for no budget)",
        )),
        Some(budget) => Ok(budget),
    }
}

/// New answers of a tenant over its budget get 429 `budget_exceeded` (answers running
/// finish). This hub applies the change at once, the other hubs of a cluster within seconds.
async fn apply_budgets(state: &AppState) {
    if !state.usage.refresh_budgets(APPLY_BUDGET_WITHIN).await {
        log::warn!("a budget change was not applied to this hub's counters in time");
    }
}

/// Set a tenant's monthly output-token budget
///
/// Over it, for the current calendar month (UTC), the tenant's new answers get 429
/// `budget_exceeded` on every transport; answers already running finish. Operators only.
#[utoipa::path(
    operation_id = "admin_update_tenant",
    patch,
    path = "/api/v1/admin/tenants/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The tenant id")),
    request_body(content = BudgetChange, content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The tenant as it is now", body = crate::store::Tenant),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an operator key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn set_tenant_budget(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
    body: web::Json<BudgetChange>,
) -> Result<HttpResponse, ApiError> {
    if !admin.administers(&id) {
        return Err(ApiError::NotFound("tenant"));
    }
    if !admin.is_operator {
        return Err(ApiError::Forbidden(
            "only an operator key may set a tenant's budget",
        ));
    }
    let budget = budget_of(&body)?;
    let tenant = state
        .store
        .set_tenant_budget(&id, budget)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    apply_budgets(&state).await;
    Ok(HttpResponse::Ok().json(tenant))
}

/// Set an API key's monthly output-token budget
///
/// Over it, for the current calendar month (UTC), the key's new answers get 429
/// `budget_exceeded` on every transport; answers already running finish. The key's
/// tenant's admins and operators; an operator key's budget, operators only.
#[utoipa::path(
    operation_id = "admin_update_key",
    patch,
    path = "/api/v1/admin/keys/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The key id")),
    request_body(content = BudgetChange, content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The key as it is now (without its secret)", body = crate::store::ApiKeyRecord),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not allowed to change an operator key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such key, a revoked one, or not the caller's", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn set_key_budget(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
    body: web::Json<BudgetChange>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .store
        .get_key(&id)
        .await?
        .filter(|k| admin.administers(&k.tenant_id) && k.revoked_at.is_none())
        .ok_or(ApiError::NotFound("key"))?;
    if key.is_operator && !admin.is_operator {
        return Err(ApiError::Forbidden(
            "only an operator key may change an operator key",
        ));
    }
    let budget = budget_of(&body)?;
    let key = state
        .store
        .set_key_budget(&key.id, budget)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    apply_budgets(&state).await;
    Ok(HttpResponse::Ok().json(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        csv_field(&mut out, "gpt-4o");
        out.push('|');
        csv_field(&mut out, "a,\"b\"");
        out.push('|');
        csv_field(&mut out, "=HYPERLINK(\"x\")");
        assert_eq!(out, "gpt-4o|\"a,\"\"b\"\"\"|\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn group_by_is_checked() {
        assert_eq!(parse_group_by(None).unwrap(), vec![UsageGroup::Day]);
        assert_eq!(
            parse_group_by(Some("tenant, model")).unwrap(),
            vec![UsageGroup::Tenant, UsageGroup::Model]
        );
        assert!(parse_group_by(Some("tenant,tenant")).is_err());
        assert!(parse_group_by(Some("colour")).is_err());
    }
}
