//! What turns cost, and what a workspace may spend: every turn's usage is stored in the
//! transaction that ends its reply, with a per-month counter beside it so a send checks its
//! quota with one read; plans are set by a billing system.

use crawbl_proto::conversation::v1::{Message, UsageTotal};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Row};

use super::now_ms;

/// One turn's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// As the provider named it; empty when it did not say.
    pub model: String,
    pub agent_id: String,
    /// Who sent the message the turn answered.
    pub user_id: String,
    pub duration_ms: u64,
}

impl TurnUsage {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A workspace's plan: its name and monthly token quota (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub monthly_token_quota: Option<u64>,
}

/// A count as stored (a Postgres `BIGINT`).
pub(super) fn usage_to_db(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn from_db(count: i64) -> u64 {
    u64::try_from(count).unwrap_or_default()
}

/// `YYYY-MM-DD` and `YYYY-MM` of a unix-ms time, in UTC.
pub fn day_and_month(at_ms: i64) -> (String, String) {
    let at = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
    (
        at.format("%Y-%m-%d").to_string(),
        at.format("%Y-%m").to_string(),
    )
}

/// When the month of `at_ms` ends (the first millisecond of the next month, UTC).
pub fn month_end_ms(at_ms: i64) -> i64 {
    use chrono::Datelike as _;
    let at = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
    let (year, month) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    chrono::NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map_or(at_ms, |start| start.and_utc().timestamp_millis())
}

/// Stores the usage of the turn that wrote `reply`, inside the transaction that ends it.
pub async fn record_usage(
    connection: &mut AnyConnection,
    reply: &Message,
    usage: &TurnUsage,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let (day, month) = day_and_month(now);
    let stored = sqlx::query(
        "INSERT INTO turn_usage (reply_id, workspace_id, conversation_id, agent_id, user_id, model,
                                 input_tokens, output_tokens, duration_ms, day, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (reply_id) DO NOTHING",
    )
    .bind(&reply.id)
    .bind(&reply.workspace_id)
    .bind(&reply.conversation_id)
    .bind(&usage.agent_id)
    .bind(&usage.user_id)
    .bind(&usage.model)
    .bind(usage_to_db(usage.input_tokens))
    .bind(usage_to_db(usage.output_tokens))
    .bind(usage_to_db(usage.duration_ms))
    .bind(&day)
    .bind(now)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if stored == 1 {
        sqlx::query(
            "INSERT INTO workspace_month_usage (workspace_id, month, tokens) VALUES ($1, $2, $3)
             ON CONFLICT (workspace_id, month)
             DO UPDATE SET tokens = workspace_month_usage.tokens + excluded.tokens",
        )
        .bind(&reply.workspace_id)
        .bind(&month)
        .bind(usage_to_db(usage.tokens()))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// The workspace's own plan (`None`: a billing system set none) and the tokens it used in the
/// month of `at_ms`: what a send's quota check needs, in one read.
pub async fn plan_and_month_tokens(
    pool: &AnyPool,
    workspace_id: &str,
    at_ms: i64,
) -> Result<(Option<Plan>, u64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT p.plan, p.monthly_token_quota, u.tokens
         FROM (SELECT $1 AS workspace_id) w
         LEFT JOIN workspace_plans p ON p.workspace_id = w.workspace_id
         LEFT JOIN workspace_month_usage u ON u.workspace_id = w.workspace_id AND u.month = $2",
    )
    .bind(workspace_id)
    .bind(day_and_month(at_ms).1)
    .fetch_one(pool)
    .await?;
    plan_and_month_tokens_of(&row)
}

/// The plan (`None`: the default) and the month's tokens of a row with the columns `plan`,
/// `monthly_token_quota` and `tokens` (each `NULL` when there is none).
pub(super) fn plan_and_month_tokens_of(row: &AnyRow) -> Result<(Option<Plan>, u64), sqlx::Error> {
    let plan = row
        .try_get::<Option<String>, _>("plan")?
        .map(|name| -> Result<Plan, sqlx::Error> {
            Ok(Plan {
                name,
                monthly_token_quota: row
                    .try_get::<Option<i64>, _>("monthly_token_quota")?
                    .map(from_db),
            })
        })
        .transpose()?;
    let used = row.try_get::<Option<i64>, _>("tokens")?.map(from_db);
    Ok((plan, used.unwrap_or_default()))
}

pub async fn set_plan(pool: &AnyPool, workspace_id: &str, plan: &Plan) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workspace_plans (workspace_id, plan, monthly_token_quota, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id) DO UPDATE SET plan = excluded.plan,
             monthly_token_quota = excluded.monthly_token_quota, updated_at = excluded.updated_at",
    )
    .bind(workspace_id)
    .bind(&plan.name)
    .bind(plan.monthly_token_quota.map(usage_to_db))
    .bind(now_ms())
    .execute(pool)
    .await?;
    Ok(())
}

/// Totals between two days (both included), grouped by `column` (`day`, `agent_id`,
/// `user_id`), or one total when `column` is `None`.
pub async fn usage_totals(
    pool: &AnyPool,
    workspace_id: &str,
    from_day: &str,
    to_day: &str,
    column: Option<&'static str>,
) -> Result<Vec<UsageTotal>, sqlx::Error> {
    // Sums cast back to BIGINT: Postgres sums BIGINT as NUMERIC.
    let (key, group) = match column {
        Some(column) => (column, format!("GROUP BY {column} ORDER BY {column}")),
        None => ("''", String::new()),
    };
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {key} AS total_key,
                CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens,
                CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens,
                COUNT(*) AS turns
         FROM turn_usage WHERE workspace_id = $1 AND day >= $2 AND day <= $3 {group}"
    )))
    .bind(workspace_id)
    .bind(from_day)
    .bind(to_day)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(UsageTotal {
                key: row.try_get("total_key")?,
                input_tokens: from_db(row.try_get("input_tokens")?),
                output_tokens: from_db(row.try_get("output_tokens")?),
                turns: from_db(row.try_get("turns")?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_are_utc_and_a_month_ends_at_the_next_ones_start() {
        // 2026-12-31T23:59:59.999Z
        let last = 1_798_761_599_999;
        assert_eq!(
            day_and_month(last),
            ("2026-12-31".to_owned(), "2026-12".to_owned())
        );
        assert_eq!(month_end_ms(last), last + 1);
        // 2026-02-10 → 2026-03-01
        let february = 1_770_681_600_000;
        assert_eq!(day_and_month(february).1, "2026-02");
        assert_eq!(month_end_ms(february), 1_772_323_200_000);
    }
}
