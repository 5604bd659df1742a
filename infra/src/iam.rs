//! What each role of the stack may do: one list of statements per role, rendered into
//! the template's `AWS::IAM::Role` resources and into the table of `docs/aws.md`
//! (between [`TABLE_BEGIN`] and [`TABLE_END`]), which the suite checks against the
//! template as CloudFormation sees it (after the SAM transform).
//!
//! Every function has a role of its own (no SAM policy templates, which grant
//! `Resource: "*"` for SQS polling and more than the code uses). No role but `api`'s
//! can reach the access table (API tokens, role bindings), write definitions, secrets or
//! schedules; the step functions read only the `application` and `configuration`
//! partitions of the definitions table (`dynamodb:LeadingKeys`).

use crate::{Function, Kind, Stack};

/// A resource a statement applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// `!GetAtt <logical id>.Arn`.
    Arn(String),
    /// `!Sub "<text>"`.
    Sub(String),
}

impl Resource {
    fn arn(id: impl Into<String>) -> Self {
        Self::Arn(id.into())
    }

    /// The form of the table of `docs/aws.md`: `EchoQueue.Arn`, or the `!Sub` text.
    pub fn shown(&self) -> String {
        match self {
            Self::Arn(id) => format!("{id}.Arn"),
            Self::Sub(text) => text.clone(),
        }
    }

    fn yaml(&self) -> String {
        match self {
            Self::Arn(id) => format!("!GetAtt {id}.Arn"),
            Self::Sub(text) => format!("!Sub \"{text}\""),
        }
    }
}

/// One `Allow` statement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Statement {
    pub actions: Vec<String>,
    pub resources: Vec<Resource>,
    /// When set, only items whose partition key is one of these (`dynamodb:LeadingKeys`).
    pub partitions: Vec<String>,
}

fn allow(actions: &[&str], resources: Vec<Resource>) -> Statement {
    Statement {
        actions: actions.iter().map(|a| a.to_string()).collect(),
        resources,
        partitions: Vec::new(),
    }
}

fn within(mut statement: Statement, partitions: &[&str]) -> Statement {
    statement.partitions = partitions.iter().map(|p| p.to_string()).collect();
    statement
}

/// A role of the stack and its statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Logical id of the `AWS::IAM::Role`.
    pub id: String,
    /// `lambda.amazonaws.com` or `scheduler.amazonaws.com`.
    pub service: &'static str,
    pub statements: Vec<Statement>,
}

/// The secrets of configurations: `<stack>/config/<configuration>` (plus the random
/// suffix Secrets Manager appends to ARNs).
const CONFIG_SECRETS: &str =
    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${AWS::StackName}/config/*";
const SCHEDULES: &str =
    "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/${ScheduleGroup}/*";
const BUCKET_OBJECTS: &str = "${OutputsBucket.Arn}/*";
const RUN_INDEXES: &str = "${RunsTable.Arn}/index/*";

/// Definition kinds (partition keys of the definitions table) the engine reads to run
/// steps: the applications `trigger_application` starts and the configurations.
const ENGINE_READS: &[&str] = &["application", "configuration"];

/// The reads and writes of the engine running steps: the run record, its snapshot, the
/// outputs and logs (runs table), documents too large for an item (bucket), the
/// configurations' secrets, and successors dispatched to any step queue.
fn engine(stack: &Stack) -> Vec<Statement> {
    vec![
        allow(
            &[
                "dynamodb:GetItem",
                "dynamodb:BatchGetItem",
                "dynamodb:Query",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
            ],
            vec![Resource::arn("RunsTable")],
        ),
        within(
            allow(
                &["dynamodb:GetItem", "dynamodb:Query"],
                vec![Resource::arn("DefinitionsTable")],
            ),
            ENGINE_READS,
        ),
        allow(
            &["s3:GetObject", "s3:PutObject"],
            vec![Resource::Sub(BUCKET_OBJECTS.into())],
        ),
        allow(
            &["secretsmanager:GetSecretValue"],
            vec![Resource::Sub(CONFIG_SECRETS.into())],
        ),
        allow(&["sqs:SendMessage"], step_queues(stack)),
    ]
}

fn step_queues(stack: &Stack) -> Vec<Resource> {
    stack
        .step_types()
        .map(|t| Resource::arn(format!("{}Queue", t.camel())))
        .collect()
}

fn dead_letter_queues(stack: &Stack) -> Vec<Resource> {
    stack
        .step_types()
        .map(|t| Resource::arn(format!("{}DeadLetterQueue", t.camel())))
        .collect()
}

/// Every step type's queue and its dead-letter queue (the console's queue depths).
fn step_and_dead_letter_queues(stack: &Stack) -> Vec<Resource> {
    let mut queues = step_queues(stack);
    queues.extend(dead_letter_queues(stack));
    queues
}

fn logs(function: &Function) -> Statement {
    allow(
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        // By name: the log group names the function, which names this role.
        vec![Resource::Sub(format!(
            "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:/aws/lambda/${{AWS::StackName}}-{}:*",
            function.short_name()
        ))],
    )
}

/// What an SQS event source mapping needs of the queue it polls, plus changing the
/// visibility of the messages it holds (a long attempt keeps its message hidden).
const POLL: &[&str] = &[
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
];

fn function_role(stack: &Stack, function: &Function) -> Role {
    let mut statements = vec![logs(function)];
    match function.kind {
        Kind::Step => {
            statements.push(allow(
                POLL,
                vec![Resource::arn(format!("{}Queue", function.camel()))],
            ));
            statements.extend(engine(stack));
            if function.cache {
                statements.push(allow(
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:DeleteItem",
                    ],
                    vec![Resource::arn("CacheTable")],
                ));
            }
        }
        Kind::DeadLetter => {
            statements.push(allow(POLL, dead_letter_queues(stack)));
            statements.extend(engine(stack));
        }
        Kind::Start => {
            statements.extend(engine(stack).into_iter().map(|s| {
                if s.partitions.is_empty() {
                    s
                } else {
                    // The schedule a tick fires, and its stats.
                    within(
                        s,
                        &["application", "configuration", "schedule", "schedule_stats"],
                    )
                }
            }));
            statements.push(within(
                allow(
                    &["dynamodb:UpdateItem"],
                    vec![Resource::arn("DefinitionsTable")],
                ),
                &["schedule_stats"],
            ));
        }
        Kind::Api => {
            statements.extend([
                // DeleteItem: deleting a run's report (`DELETE /reports/{id}`).
                allow(
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:BatchGetItem",
                        "dynamodb:Query",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                    ],
                    vec![
                        Resource::arn("RunsTable"),
                        Resource::Sub(RUN_INDEXES.into()),
                    ],
                ),
                allow(
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:Query",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                    ],
                    vec![Resource::arn("DefinitionsTable")],
                ),
                allow(
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:Query",
                        "dynamodb:PutItem",
                        "dynamodb:DeleteItem",
                    ],
                    vec![Resource::arn("AccessTable")],
                ),
                // Scan: listing and deleting cache keys by prefix (the table is keyed by
                // `key` alone).
                allow(
                    &["dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:Scan"],
                    vec![Resource::arn("CacheTable")],
                ),
                allow(
                    &["s3:GetObject", "s3:PutObject"],
                    vec![Resource::Sub(BUCKET_OBJECTS.into())],
                ),
                allow(
                    &[
                        "secretsmanager:GetSecretValue",
                        "secretsmanager:CreateSecret",
                        "secretsmanager:PutSecretValue",
                        "secretsmanager:DeleteSecret",
                    ],
                    vec![Resource::Sub(CONFIG_SECRETS.into())],
                ),
                allow(&["sqs:SendMessage"], step_queues(stack)),
                // The dashboard's queue depths (`GET /api/v1/dashboard`).
                allow(
                    &["sqs:GetQueueAttributes"],
                    step_and_dead_letter_queues(stack),
                ),
                allow(
                    &[
                        "scheduler:CreateSchedule",
                        "scheduler:UpdateSchedule",
                        "scheduler:DeleteSchedule",
                    ],
                    vec![Resource::Sub(SCHEDULES.into())],
                ),
                allow(&["iam:PassRole"], vec![Resource::arn("SchedulerRole")]),
            ]);
        }
    }
    Role {
        id: function.role_id(),
        service: "lambda.amazonaws.com",
        statements,
    }
}

/// Every role of the stack: one per function, and the role EventBridge Scheduler
/// assumes to invoke `start` (and to park the ticks it could not deliver).
pub fn roles(stack: &Stack) -> Vec<Role> {
    let mut roles: Vec<Role> = stack
        .functions
        .iter()
        .map(|f| function_role(stack, f))
        .collect();
    roles.push(Role {
        id: "SchedulerRole".into(),
        service: "scheduler.amazonaws.com",
        statements: vec![
            allow(
                &["lambda:InvokeFunction"],
                vec![Resource::arn(stack.function(Kind::Start).logical_id())],
            ),
            allow(
                &["sqs:SendMessage"],
                vec![Resource::arn("ScheduleDeadLetterQueue")],
            ),
        ],
    });
    roles
}

/// The `Policies` entry of a role in the template (indented for `Properties`).
pub(crate) fn policy_yaml(role: &Role) -> String {
    let mut out = format!(
        "      Policies:\n        - PolicyName: {}\n          PolicyDocument:\n            Version: \"2012-10-17\"\n            Statement:\n",
        role.id
    );
    for s in &role.statements {
        out.push_str("              - Effect: Allow\n");
        out.push_str(&format!(
            "                Action: [{}]\n",
            s.actions.join(", ")
        ));
        out.push_str("                Resource:\n");
        for r in &s.resources {
            out.push_str(&format!("                  - {}\n", r.yaml()));
        }
        if !s.partitions.is_empty() {
            out.push_str(&format!(
                "                Condition:\n                  \"ForAllValues:StringEquals\":\n                    \"dynamodb:LeadingKeys\": [{}]\n",
                s.partitions.join(", ")
            ));
        }
    }
    out
}

/// Marks around the generated table in `docs/aws.md`.
pub const TABLE_BEGIN: &str =
    "<!-- iam-table:begin (generated by `cargo run -p sluice-infra`; do not edit) -->";
pub const TABLE_END: &str = "<!-- iam-table:end -->";

/// One row of the table: a statement of a role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub role: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub partitions: Vec<String>,
}

pub fn rows(stack: &Stack) -> Vec<Row> {
    roles(stack)
        .iter()
        .flat_map(|role| {
            role.statements.iter().map(|s| Row {
                role: role.id.clone(),
                actions: s.actions.clone(),
                resources: s.resources.iter().map(Resource::shown).collect(),
                partitions: s.partitions.clone(),
            })
        })
        .collect()
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table (with its marks) as it appears in `docs/aws.md`.
pub fn markdown_table(stack: &Stack) -> String {
    let mut out = format!(
        "{TABLE_BEGIN}\n| role | actions | resources | only partitions (`dynamodb:LeadingKeys`) |\n|---|---|---|---|\n"
    );
    for row in rows(stack) {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            row.role,
            code_list(&row.actions),
            code_list(&row.resources),
            code_list(&row.partitions)
        ));
    }
    out.push_str(TABLE_END);
    out
}

/// Reads the rows back from a document holding [`markdown_table`] (for the check
/// against the translated template).
pub fn parse_markdown_table(doc: &str) -> Result<Vec<Row>, String> {
    let start = doc
        .find(TABLE_BEGIN)
        .ok_or("the IAM table's begin mark is missing")?;
    let end = doc[start..]
        .find(TABLE_END)
        .ok_or("the IAM table's end mark is missing")?
        + start;
    let cells = |cell: &str| -> Vec<String> {
        cell.split(", ")
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    doc[start + TABLE_BEGIN.len()..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let columns: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
            if columns.len() != 4 {
                return Err(format!("IAM table row without 4 columns: {line}"));
            }
            Ok(Row {
                role: columns[0].trim().trim_matches('`').to_string(),
                actions: cells(columns[1]),
                resources: cells(columns[2]),
                partitions: cells(columns[3]),
            })
        })
        .collect()
}

/// `doc` with its table replaced by the current one.
pub fn replace_markdown_table(doc: &str, stack: &Stack) -> Result<String, String> {
    let start = doc
        .find(TABLE_BEGIN)
        .ok_or("the IAM table's begin mark is missing")?;
    let end = doc[start..]
        .find(TABLE_END)
        .ok_or("the IAM table's end mark is missing")?
        + start
        + TABLE_END.len();
    Ok(format!(
        "{}{}{}",
        &doc[..start],
        markdown_table(stack),
        &doc[end..]
    ))
}
