//! Usage accounting: one row per answer (`usage_records`), written in batches by the usage
//! writer (`crate::usage`), read back grouped; and the monthly output-token budgets of
//! tenants and keys.

use serde::Serialize;
use sqlx::Row;

use super::{ApiKeyRecord, Store, Tenant};

/// Rows per INSERT statement: well under SQLite's bound on variables per statement.
const ROWS_PER_STATEMENT: usize = 400;

/// What one answer used, as the hub saw it when the answer's slot was released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub answer_id: String,
    /// When it ended, in Unix milliseconds of the hub's clock.
    pub ended_at_ms: i64,
    pub tenant_id: String,
    pub key_id: String,
    pub transport: &'static str,
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    /// The upstream reported the input count (otherwise the hub estimated it).
    pub input_reported: bool,
    pub output_tokens: u64,
    /// The upstream reported the output count (otherwise the hub counted the deltas).
    pub output_reported: bool,
    pub ttft_ms: Option<u64>,
    pub duration_ms: u64,
    /// `done`, `error` or `cancelled`.
    pub outcome: &'static str,
    pub error_code: Option<String>,
    pub detached: bool,
    pub resumed: bool,
}

/// A column usage can be grouped by, in the API's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Tenant,
    Key,
    Provider,
    Model,
    Day,
    Transport,
}

impl UsageGroup {
    pub const ALL: [UsageGroup; 6] = [
        UsageGroup::Tenant,
        UsageGroup::Key,
        UsageGroup::Provider,
        UsageGroup::Model,
        UsageGroup::Day,
        UsageGroup::Transport,
    ];

    /// The name in `?groupBy=`.
    pub fn name(self) -> &'static str {
        match self {
            UsageGroup::Tenant => "tenant",
            UsageGroup::Key => "key",
            UsageGroup::Provider => "provider",
            UsageGroup::Model => "model",
            UsageGroup::Day => "day",
            UsageGroup::Transport => "transport",
        }
    }

    /// The field of a result row (camelCase, as the rest of the API).
    pub fn field(self) -> &'static str {
        match self {
            UsageGroup::Tenant => "tenantId",
            UsageGroup::Key => "keyId",
            other => other.name(),
        }
    }

    pub fn parse(name: &str) -> Option<UsageGroup> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The column: one of a fixed list, never text from a request.
    fn column(self) -> &'static str {
        match self {
            UsageGroup::Tenant => "tenant_id",
            UsageGroup::Key => "key_id",
            UsageGroup::Provider => "provider",
            UsageGroup::Model => "model",
            UsageGroup::Day => "day",
            UsageGroup::Transport => "transport",
        }
    }
}

/// A usage report's range and grouping.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// First and last UTC day (`YYYY-MM-DD`), both included.
    pub from_day: String,
    pub to_day: String,
    /// One tenant's usage, or every tenant's (`None`).
    pub tenant_id: Option<String>,
    pub group_by: Vec<UsageGroup>,
}

/// One group of a usage report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageTotals {
    pub answers: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Answers whose input count is the hub's estimate.
    pub input_estimated: i64,
    /// Answers whose output count is the hub's count of deltas.
    pub output_counted: i64,
    pub errors: i64,
    pub cancelled: i64,
    pub detached: i64,
    pub resumed: i64,
    pub ttft_ms_sum: i64,
    pub ttft_count: i64,
    pub duration_ms_sum: i64,
}

impl UsageTotals {
    pub fn add(&mut self, o: &UsageTotals) {
        self.answers += o.answers;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.input_estimated += o.input_estimated;
        self.output_counted += o.output_counted;
        self.errors += o.errors;
        self.cancelled += o.cancelled;
        self.detached += o.detached;
        self.resumed += o.resumed;
        self.ttft_ms_sum += o.ttft_ms_sum;
        self.ttft_count += o.ttft_count;
        self.duration_ms_sum += o.duration_ms_sum;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// The group's values, in the query's `group_by` order.
    pub groups: Vec<String>,
    pub totals: UsageTotals,
}

/// The budgets set, and what each budgeted tenant and key used from `since` on.
#[derive(Debug, Clone, Default)]
pub struct BudgetSnapshot {
    pub tenant_budgets: Vec<(String, i64)>,
    pub key_budgets: Vec<(String, i64)>,
    pub tenant_used: Vec<(String, i64)>,
    pub key_used: Vec<(String, i64)>,
}

const SUMS: &str = "COUNT(*), \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN input_source = 'estimated' THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN output_source = 'counted' THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN detached THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN resumed THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(ttft_ms), 0) AS BIGINT), \
     COUNT(ttft_ms), \
     CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT)";

impl Store {
    /// Writes a batch of records in one transaction.
    pub async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), sqlx::Error> {
        if records.is_empty() {
            return Ok(());
        }
        let hub_id = self.hub_id.to_string();
        let done = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in records.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO usage_records (answer_id, day, ended_at, tenant_id, key_id, \
                     transport, provider, model, input_tokens, input_source, output_tokens, \
                     output_source, ttft_ms, duration_ms, outcome, error_code, detached, \
                     resumed, hub_id) ",
                );
                insert.push_values(chunk, |mut row, r| {
                    row.push_bind(r.answer_id.clone())
                        .push_bind(utc_day(r.ended_at_ms))
                        .push_bind(iso_time(r.ended_at_ms))
                        .push_bind(r.tenant_id.clone())
                        .push_bind(r.key_id.clone())
                        .push_bind(r.transport)
                        .push_bind(r.provider.clone())
                        .push_bind(r.model.clone())
                        .push_bind(saturating_i64(r.input_tokens))
                        .push_bind(if r.input_reported { "provider" } else { "estimated" })
                        .push_bind(saturating_i64(r.output_tokens))
                        .push_bind(if r.output_reported { "provider" } else { "counted" })
                        .push_bind(r.ttft_ms.map(saturating_i64))
                        .push_bind(saturating_i64(r.duration_ms))
                        .push_bind(r.outcome)
                        .push_bind(r.error_code.clone())
                        .push_bind(r.detached)
                        .push_bind(r.resumed)
                        .push_bind(hub_id.clone());
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        });
        self.record_outcome(&done);
        done
    }

    /// The report behind `GET /api/v1/admin/usage`: totals per group over the range.
    pub async fn usage_report(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, sqlx::Error> {
        let columns: Vec<&str> = q.group_by.iter().map(|g| g.column()).collect();
        let (select, group, order) = if columns.is_empty() {
            (String::new(), String::new(), String::new())
        } else {
            let list = columns.join(", ");
            (
                format!("{list}, "),
                format!(" GROUP BY {list}"),
                format!(" ORDER BY {list}"),
            )
        };
        let sql = format!(
            "SELECT {select}{SUMS} FROM usage_records \
             WHERE day >= $1 AND day <= $2 AND ($3 IS NULL OR tenant_id = $3){group}{order}"
        );
        let n = columns.len();
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(&q.from_day)
                .bind(&q.to_day)
                .bind(q.tenant_id.as_deref())
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    let mut groups = Vec::with_capacity(n);
                    for i in 0..n {
                        groups.push(row.try_get::<String, _>(i)?);
                    }
                    let mut v = [0i64; 12];
                    for (j, slot) in v.iter_mut().enumerate() {
                        *slot = row.try_get::<i64, _>(n + j)?;
                    }
                    Ok(UsageRow {
                        groups,
                        totals: UsageTotals {
                            answers: v[0],
                            input_tokens: v[1],
                            output_tokens: v[2],
                            input_estimated: v[3],
                            output_counted: v[4],
                            errors: v[5],
                            cancelled: v[6],
                            detached: v[7],
                            resumed: v[8],
                            ttft_ms_sum: v[9],
                            ttft_count: v[10],
                            duration_ms_sum: v[11],
                        },
                    })
                })
                .collect()
        })
    }

    /// The budgets set, and the output tokens each budgeted tenant and key used from the
    /// day `since` (`YYYY-MM-DD`) on: what admission compares.
    pub async fn budget_snapshot(&self, since: &str) -> Result<BudgetSnapshot, sqlx::Error> {
        let done = on_pool!(self, pool => {
            let tenant_budgets: Vec<(String, i64)> = sqlx::query_as(
                "SELECT id, monthly_output_token_budget FROM tenants \
                 WHERE monthly_output_token_budget IS NOT NULL",
            )
            .fetch_all(pool)
            .await?;
            let key_budgets: Vec<(String, i64)> = sqlx::query_as(
                "SELECT id, monthly_output_token_budget FROM api_keys \
                 WHERE monthly_output_token_budget IS NOT NULL AND revoked_at IS NULL",
            )
            .fetch_all(pool)
            .await?;
            let tenant_used: Vec<(String, i64)> = if tenant_budgets.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(
                    "SELECT tenant_id, CAST(SUM(output_tokens) AS BIGINT) FROM usage_records \
                     WHERE day >= $1 AND tenant_id IN (SELECT id FROM tenants \
                       WHERE monthly_output_token_budget IS NOT NULL) \
                     GROUP BY tenant_id",
                )
                .bind(since)
                .fetch_all(pool)
                .await?
            };
            let key_used: Vec<(String, i64)> = if key_budgets.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(
                    "SELECT key_id, CAST(SUM(output_tokens) AS BIGINT) FROM usage_records \
                     WHERE day >= $1 AND key_id IN (SELECT id FROM api_keys \
                       WHERE monthly_output_token_budget IS NOT NULL) \
                     GROUP BY key_id",
                )
                .bind(since)
                .fetch_all(pool)
                .await?
            };
            Ok(BudgetSnapshot {
                tenant_budgets,
                key_budgets,
                tenant_used,
                key_used,
            })
        });
        self.record_outcome(&done);
        done
    }

    /// Sets (or with `None` removes) a tenant's monthly budget; `None` when no such tenant.
    pub async fn set_tenant_budget(
        &self,
        tenant_id: &str,
        budget: Option<i64>,
    ) -> Result<Option<Tenant>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Tenant>(
                "UPDATE tenants SET monthly_output_token_budget = $2 WHERE id = $1 \
                 RETURNING id, name, created_at, monthly_output_token_budget",
            )
            .bind(tenant_id)
            .bind(budget)
            .fetch_optional(pool)
            .await
        })
    }

    /// Sets (or with `None` removes) a key's monthly budget; `None` when no such key.
    pub async fn set_key_budget(
        &self,
        key_id: &str,
        budget: Option<i64>,
    ) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, ApiKeyRecord>(
                "UPDATE api_keys SET monthly_output_token_budget = $2 WHERE id = $1 \
                 RETURNING id, tenant_id, name, is_admin, is_operator, created_at, revoked_at, \
                 monthly_output_token_budget",
            )
            .bind(key_id)
            .bind(budget)
            .fetch_optional(pool)
            .await
        })
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a (year, month, day) (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC month after the one of `ms`: its year, its month, and its first day's start in
/// Unix milliseconds.
pub fn next_month(ms: i64) -> (i64, u32, i64) {
    let (y, m, _) = civil_from_days(ms.div_euclid(86_400_000));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (y, m, days_from_civil(y, m, 1) * 86_400_000)
}

/// The UTC day of a Unix time in milliseconds, as `YYYY-MM-DD`.
pub fn utc_day(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The first day of the UTC month of a Unix time in milliseconds, as `YYYY-MM-01`.
pub fn utc_month_start(ms: i64) -> String {
    let (y, m, _) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-01")
}

/// A Unix time in milliseconds as ISO 8601 text, the form of every `*_at` text column.
pub fn iso_time(ms: i64) -> String {
    let day = utc_day(ms);
    let in_day = ms.rem_euclid(86_400_000);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{day}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Unix milliseconds now, by this hub's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether `text` is a real calendar day written `YYYY-MM-DD`.
pub fn is_day(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits_only = b
        .iter()
        .enumerate()
        .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !digits_only {
        return false;
    }
    let (y, m, d): (i64, u32, u32) = (
        text[0..4].parse().unwrap_or(0),
        text[5..7].parse().unwrap_or(0),
        text[8..10].parse().unwrap_or(0),
    );
    if !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= days_in
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_milliseconds() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.999Z
        assert_eq!(iso_time(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(utc_month_start(1_709_251_199_999), "2024-02-01");
        assert_eq!(utc_day(1_709_251_200_000), "2024-03-01");
        assert_eq!(utc_day(-1), "1969-12-31");
        assert_eq!(next_month(1_709_251_199_999), (2024, 3, 1_709_251_200_000));
        assert_eq!(next_month(1_735_689_599_000), (2025, 1, 1_735_689_600_000));
    }

    #[test]
    fn days_are_checked() {
        assert!(is_day("2024-02-29"));
        assert!(!is_day("2023-02-29"));
        assert!(!is_day("2024-13-01"));
        assert!(!is_day("2024-1-01"));
        assert!(!is_day("2024-01-01T00"));
        assert!(!is_day("20a4-01-01"));
    }
}
