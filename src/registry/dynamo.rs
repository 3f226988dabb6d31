//! The DynamoDB registry store: one table, keys designed so that resolving
//! `name@1.x` (or a label) is one Query returning the winning version with
//! its artifacts, and registering a version is one TransactWriteItems.
//!
//! Items (attribute `pk`, `sk`):
//! - version: `PKG#<name>` / `V#<sort key>`, artifacts embedded as a list of
//!   maps (one Artifact record per location); GSI keys: `gsi1pk =
//!   NAME#<name>` and `gsi2pk = LABEL#<label>` only while active (sparse
//!   indexes), `gsi3pk = LABEL#<label>` always; the sort keys are the
//!   version's [`Version::sort_key`] (`gsi2sk`/`gsi3sk` add `#<name>`).
//! - head: `PKG#<name>` / `HEAD` with the highest version's sort key, the
//!   compare-and-swap point that serialises version assignment.
//! - bake key: `BAKE#<key>` / `BAKE` pointing at the version.
//!
//! Reads through the GSIs are eventually consistent in real DynamoDB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, DisplayErrorContext};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::{
    Artifact, Lookup, PackageVersion, RegistryError, RegistryStore, Status, Version, VersionPattern,
};

/// Counts the HTTP requests a DynamoDB client sends (retries included);
/// installed on the store's client so benchmarks and tests can measure it.
#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<AtomicU64>);

impl RequestCounter {
    /// Requests sent so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Registry records in one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    requests: RequestCounter,
}

/// The stored shape of a version item.
#[derive(Serialize, Deserialize)]
struct VersionItem {
    pk: String,
    sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2sk: Option<String>,
    gsi3pk: String,
    gsi3sk: String,
    #[serde(flatten)]
    package: PackageVersion,
}

fn pkg_pk(name: &str) -> String {
    format!("PKG#{name}")
}

fn version_sk(version: &Version) -> String {
    format!("V#{}", version.sort_key())
}

fn bake_pk(key: &str) -> String {
    format!("BAKE#{key}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn dynamo_err<E>(e: E) -> RegistryError
where
    E: std::error::Error + 'static,
{
    RegistryError::Dynamo(DisplayErrorContext(e).to_string())
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> RegistryError {
    RegistryError::Dynamo(e.to_string())
}

impl VersionItem {
    fn new(package: &PackageVersion) -> VersionItem {
        let key = package.version.sort_key();
        let active = package.status == Status::Active;
        let label_sk = format!("{key}#{}", package.name);
        VersionItem {
            pk: pkg_pk(&package.name),
            sk: version_sk(&package.version),
            gsi1pk: active.then(|| format!("NAME#{}", package.name)),
            gsi1sk: active.then(|| key.clone()),
            gsi2pk: active.then(|| format!("LABEL#{}", package.label)),
            gsi2sk: active.then(|| label_sk.clone()),
            gsi3pk: format!("LABEL#{}", package.label),
            gsi3sk: label_sk,
            package: package.clone(),
        }
    }
}

fn to_item(package: &PackageVersion) -> Result<HashMap<String, AttributeValue>, RegistryError> {
    serde_dynamo::to_item(VersionItem::new(package)).map_err(|e| RegistryError::Corrupt {
        key: format!("{}@{}", package.name, package.version),
        message: e.to_string(),
    })
}

fn from_item(item: HashMap<String, AttributeValue>) -> Result<PackageVersion, RegistryError> {
    let key = match (item.get("pk"), item.get("sk")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => format!("{pk}/{sk}"),
        _ => "<no key>".to_string(),
    };
    serde_dynamo::from_item::<_, VersionItem>(item)
        .map(|i| i.package)
        .map_err(|e| RegistryError::Corrupt {
            key,
            message: e.to_string(),
        })
}

impl DynamoStore {
    /// A store over `table`, with a client built from `config` (a request
    /// counter is added to it).
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> DynamoStore {
        let requests = RequestCounter::default();
        let conf = aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(requests.clone())
            .build();
        DynamoStore {
            client: Client::from_conf(conf),
            table: table.into(),
            requests,
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The client (shared with build records kept in the same table).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Requests this store's client has sent.
    pub fn requests(&self) -> &RequestCounter {
        &self.requests
    }

    /// Creates the table with its indexes (on-demand billing). Production
    /// tables come from the SAM template; this is for tests and local use.
    pub async fn create_table(&self) -> Result<(), RegistryError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_err)
        };
        let mut req = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?);
        for name in [
            "pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk",
        ] {
            req = req.attribute_definitions(attr(name)?);
        }
        for n in 1..=3 {
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(format!("gsi{n}"))
                    .key_schema(key(&format!("gsi{n}pk"), KeyType::Hash)?)
                    .key_schema(key(&format!("gsi{n}sk"), KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(build_err)?,
            );
        }
        req.send().await.map_err(dynamo_err)?;
        Ok(())
    }

    /// Loads many versions at once with BatchWriteItem (25 items a
    /// request), for imports and benchmarks. Not atomic and not checked
    /// against existing records: use [`RegistryStore::insert`] for normal
    /// registration. The package heads are set to the highest version given.
    pub async fn import(&self, packages: &[PackageVersion]) -> Result<(), RegistryError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let mut heads: HashMap<&str, &Version> = HashMap::new();
        let mut requests = Vec::with_capacity(packages.len());
        for p in packages {
            let head = heads.entry(&p.name).or_insert(&p.version);
            if p.version > **head {
                *head = &p.version;
            }
            requests.push(
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(to_item(p)?))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build(),
            );
        }
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            while !pending.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(dynamo_err)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        for (name, version) in heads {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pkg_pk(name)))
                .item("sk", s("HEAD"))
                .item("latest_key", s(version.sort_key()))
                .item("latest", s(version.to_string()))
                .send()
                .await
                .map_err(dynamo_err)?;
        }
        Ok(())
    }

    async fn get_item(
        &self,
        pk: String,
        sk: String,
    ) -> Result<Option<HashMap<String, AttributeValue>>, RegistryError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(out.item)
    }

    async fn query_all(
        &self,
        name: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, RegistryError> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :v)")
            .expression_attribute_values(":pk", s(pkg_pk(name)))
            .expression_attribute_values(":v", s("V#"))
            .scan_index_forward(false)
            .into_paginator()
            .items()
            .send();
        let mut pages = pages;
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            out.push(item.map_err(dynamo_err)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl RegistryStore for DynamoStore {
    async fn latest_version(&self, name: &str) -> Result<Option<Version>, RegistryError> {
        let head = self.get_item(pkg_pk(name), "HEAD".into()).await?;
        match head.as_ref().and_then(|h| h.get("latest_key")) {
            Some(AttributeValue::S(key)) => Ok(Some(Version::from_sort_key(key)?)),
            Some(_) => Err(RegistryError::Corrupt {
                key: format!("{}/HEAD", pkg_pk(name)),
                message: "latest_key is not a string".into(),
            }),
            None => Ok(None),
        }
    }

    async fn insert(
        &self,
        package: &PackageVersion,
        seen_latest: Option<&Version>,
    ) -> Result<(), RegistryError> {
        let new_latest = match seen_latest {
            Some(seen) if seen > &package.version => seen.clone(),
            _ => package.version.clone(),
        };
        let mut head = Update::builder()
            .table_name(&self.table)
            .key("pk", s(pkg_pk(&package.name)))
            .key("sk", s("HEAD"))
            .update_expression("SET latest_key = :new, latest = :newtext")
            .expression_attribute_values(":new", s(new_latest.sort_key()))
            .expression_attribute_values(":newtext", s(new_latest.to_string()));
        head = match seen_latest {
            None => head.condition_expression("attribute_not_exists(pk)"),
            Some(seen) => head
                .condition_expression("latest_key = :seen")
                .expression_attribute_values(":seen", s(seen.sort_key())),
        };
        let mut items = vec![
            TransactWriteItem::builder()
                .update(head.build().map_err(build_err)?)
                .build(),
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(to_item(package)?))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(build_err)?,
                )
                .build(),
        ];
        if let Some(key) = &package.bake_key {
            items.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .item("pk", s(bake_pk(key)))
                            .item("sk", s("BAKE"))
                            .item("name", s(&package.name))
                            .item("version", s(package.version.to_string()))
                            .condition_expression("attribute_not_exists(pk)")
                            .build()
                            .map_err(build_err)?,
                    )
                    .build(),
            );
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e.into_service_error(),
        };
        let reasons: Vec<Option<String>> = match &err {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_string))
                .collect(),
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionInProgressException(_) => {
                return Err(RegistryError::Conflict(package.name.clone()))
            }
            _ => return Err(dynamo_err(err)),
        };
        let failed = |i: usize| {
            reasons
                .get(i)
                .and_then(|c| c.as_deref())
                .is_some_and(|c| c != "None")
        };
        let code = |i: usize| reasons.get(i).and_then(|c| c.as_deref()).unwrap_or("None");
        if code(0) == "TransactionConflict" || code(1) == "TransactionConflict" {
            return Err(RegistryError::Conflict(package.name.clone()));
        }
        if failed(0) {
            return Err(RegistryError::Conflict(package.name.clone()));
        }
        if failed(1) {
            return Err(RegistryError::VersionExists {
                name: package.name.clone(),
                version: package.version.to_string(),
            });
        }
        if let (true, Some(key)) = (failed(2), &package.bake_key) {
            let owner = self.get_item(bake_pk(key), "BAKE".into()).await?;
            let field = |f: &str| match owner.as_ref().and_then(|o| o.get(f)) {
                Some(AttributeValue::S(v)) => v.clone(),
                _ => String::new(),
            };
            return Err(RegistryError::BakeKeyExists {
                key: key.clone(),
                name: field("name"),
                version: field("version"),
            });
        }
        Err(dynamo_err(err))
    }

    async fn append_artifacts(
        &self,
        name: &str,
        version: &Version,
        artifacts: &[Artifact],
    ) -> Result<PackageVersion, RegistryError> {
        for _ in 0..20 {
            let current =
                self.get(name, version)
                    .await?
                    .ok_or_else(|| RegistryError::NotFound {
                        what: "package version",
                        query: format!("{name} {version}"),
                    })?;
            if let Some(dup) = artifacts
                .iter()
                .find(|a| current.artifacts.iter().any(|c| c.name == a.name))
            {
                return Err(RegistryError::DuplicateArtifactName {
                    package: name.to_string(),
                    version: version.to_string(),
                    name: dup.name.clone(),
                });
            }
            let new: AttributeValue = serde_dynamo::to_attribute_value(artifacts).map_err(|e| {
                RegistryError::Corrupt {
                    key: format!("{name}@{version}"),
                    message: e.to_string(),
                }
            })?;
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(pkg_pk(name)))
                .key("sk", s(version_sk(version)))
                .update_expression("SET artifacts = list_append(artifacts, :new)")
                .condition_expression("size(artifacts) = :n")
                .expression_attribute_values(":new", new)
                .expression_attribute_values(
                    ":n",
                    AttributeValue::N(current.artifacts.len().to_string()),
                )
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match result {
                Ok(out) => {
                    return from_item(out.attributes.unwrap_or_default());
                }
                Err(e) => match e.into_service_error() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_) => continue,
                    other => return Err(dynamo_err(other)),
                },
            }
        }
        Err(RegistryError::TooMuchContention(name.to_string()))
    }

    async fn get(
        &self,
        name: &str,
        version: &Version,
    ) -> Result<Option<PackageVersion>, RegistryError> {
        self.get_item(pkg_pk(name), version_sk(version))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn resolve(
        &self,
        lookup: &Lookup,
        pattern: &VersionPattern,
        include_inactive: bool,
    ) -> Result<Option<PackageVersion>, RegistryError> {
        let prefix = pattern.sort_key_prefix();
        let exact = matches!(pattern, VersionPattern::Exact(_));
        let (index, pk_attr, pk_value, sk_attr, sk_value) = match (lookup, include_inactive) {
            (Lookup::Name(n), false) => (
                Some(1),
                "gsi1pk".to_string(),
                format!("NAME#{n}"),
                "gsi1sk".to_string(),
                prefix,
            ),
            (Lookup::Name(n), true) => (
                None,
                "pk".into(),
                pkg_pk(n),
                "sk".into(),
                format!("V#{prefix}"),
            ),
            (Lookup::Label(l), inactive) => {
                let i = if inactive { 3 } else { 2 };
                // label index sort keys are `<version key>#<name>`
                let sk = if exact { format!("{prefix}#") } else { prefix };
                (
                    Some(i),
                    format!("gsi{i}pk"),
                    format!("LABEL#{l}"),
                    format!("gsi{i}sk"),
                    sk,
                )
            }
        };
        let equality = exact && matches!(lookup, Lookup::Name(_));
        let condition = if sk_value.is_empty() {
            "#pk = :pk".to_string()
        } else if equality {
            "#pk = :pk AND #sk = :sk".to_string()
        } else {
            "#pk = :pk AND begins_with(#sk, :sk)".to_string()
        };
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(|i| format!("gsi{i}")))
            .key_condition_expression(condition)
            .expression_attribute_names("#pk", pk_attr)
            .expression_attribute_values(":pk", s(pk_value))
            .scan_index_forward(false);
        if !sk_value.is_empty() {
            req = req
                .expression_attribute_names("#sk", sk_attr)
                .expression_attribute_values(":sk", s(sk_value));
        }
        if !include_inactive {
            // The active-only indexes hold active versions only.
            let out = req.limit(1).send().await.map_err(dynamo_err)?;
            return out
                .items
                .unwrap_or_default()
                .into_iter()
                .next()
                .map(from_item)
                .transpose();
        }
        // Deleted versions (images gone) are never resolved. A filter is
        // applied after `Limit`, so pages are read until one item passes.
        let mut pages = req
            .filter_expression("#status <> :deleted")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":deleted", s(Status::Deleted.to_string()))
            .into_paginator()
            .items()
            .send();
        match pages.next().await {
            Some(item) => from_item(item.map_err(dynamo_err)?).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self, name: Option<&str>) -> Result<Vec<PackageVersion>, RegistryError> {
        let items = match name {
            Some(n) => self.query_all(n).await?,
            None => {
                let pages = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .filter_expression("begins_with(pk, :p) AND begins_with(sk, :v)")
                    .expression_attribute_values(":p", s("PKG#"))
                    .expression_attribute_values(":v", s("V#"))
                    .into_paginator()
                    .items()
                    .send();
                let mut pages = pages;
                let mut out = Vec::new();
                while let Some(item) = pages.next().await {
                    out.push(item.map_err(dynamo_err)?);
                }
                out
            }
        };
        let mut out = items
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name).then(b.version.cmp(&a.version)));
        Ok(out)
    }

    async fn find_by_bake_key(&self, key: &str) -> Result<Option<PackageVersion>, RegistryError> {
        let Some(owner) = self.get_item(bake_pk(key), "BAKE".into()).await? else {
            return Ok(None);
        };
        let (Some(AttributeValue::S(name)), Some(AttributeValue::S(version))) =
            (owner.get("name"), owner.get("version"))
        else {
            return Err(RegistryError::Corrupt {
                key: bake_pk(key),
                message: "missing name or version".into(),
            });
        };
        self.get(name, &version.parse()?).await
    }

    async fn set_status(
        &self,
        name: &str,
        version: &Version,
        status: Status,
    ) -> Result<PackageVersion, RegistryError> {
        let mut current =
            self.get(name, version)
                .await?
                .ok_or_else(|| RegistryError::NotFound {
                    what: "package version",
                    query: format!("{name} {version}"),
                })?;
        current.status = status;
        // Rewrite the whole item so the sparse index keys follow the status.
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&current)?))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await
            .map_err(dynamo_err)?;
        Ok(current)
    }
}
