//! Build records in the registry's DynamoDB table: `BUILD#<id>` / `BUILD`
//! items holding the record as JSON with a revision for conditional writes,
//! and `RECIPE#<name>` / `RECIPE` items with the recipe as of its last push.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::{BuildRecord, BuildStore, BuildStoreError, RecipeBundle};

/// Build records in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoBuildStore {
    client: Client,
    table: String,
}

impl DynamoBuildStore {
    /// A store over `table` (the registry's table).
    pub fn new(client: Client, table: impl Into<String>) -> DynamoBuildStore {
        DynamoBuildStore {
            client,
            table: table.into(),
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn err<E: std::error::Error + 'static>(e: E) -> BuildStoreError {
    BuildStoreError::Dynamo(DisplayErrorContext(e).to_string())
}

fn corrupt(id: &str, message: impl std::fmt::Display) -> BuildStoreError {
    BuildStoreError::Corrupt {
        id: id.to_string(),
        message: message.to_string(),
    }
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<BuildRecord, BuildStoreError> {
    let id = match item.get("pk") {
        Some(AttributeValue::S(pk)) => pk.trim_start_matches("BUILD#").to_string(),
        _ => String::new(),
    };
    match item.get("record") {
        Some(AttributeValue::S(text)) => serde_json::from_str(text).map_err(|e| corrupt(&id, e)),
        _ => Err(corrupt(&id, "no record attribute")),
    }
}

impl DynamoBuildStore {
    fn item(record: &BuildRecord) -> Result<HashMap<String, AttributeValue>, BuildStoreError> {
        let text = serde_json::to_string(record).map_err(|e| corrupt(&record.id, e))?;
        Ok(HashMap::from([
            ("pk".to_string(), s(format!("BUILD#{}", record.id))),
            ("sk".to_string(), s("BUILD")),
            ("status".to_string(), s(record.status.to_string())),
            ("recipe".to_string(), s(&record.recipe_name)),
            ("created_at".to_string(), s(record.created_at.to_rfc3339())),
            (
                "revision".to_string(),
                AttributeValue::N(record.revision.to_string()),
            ),
            ("record".to_string(), s(text)),
        ]))
    }
}

#[async_trait]
impl BuildStore for DynamoBuildStore {
    async fn create(&self, record: &BuildRecord) -> Result<bool, BuildStoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(record)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(err(other)),
            },
        }
    }

    async fn get(&self, id: &str) -> Result<Option<BuildRecord>, BuildStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("BUILD#{id}")))
            .key("sk", s("BUILD"))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        out.item.as_ref().map(decode).transpose()
    }

    async fn save(&self, record: &mut BuildRecord) -> Result<(), BuildStoreError> {
        let seen = record.revision;
        record.revision += 1;
        let item = Self::item(record);
        let result = match item {
            Ok(item) => {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("revision = :seen")
                    .expression_attribute_values(":seen", AttributeValue::N(seen.to_string()))
                    .send()
                    .await
            }
            Err(e) => {
                record.revision = seen;
                return Err(e);
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                record.revision = seen;
                match e.into_service_error() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_) => {
                        Err(BuildStoreError::Conflict(record.id.clone()))
                    }
                    other => Err(err(other)),
                }
            }
        }
    }

    async fn list(&self, limit: usize) -> Result<Vec<BuildRecord>, BuildStoreError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(pk, :b) AND sk = :s")
            .expression_attribute_values(":b", s("BUILD#"))
            .expression_attribute_values(":s", s("BUILD"))
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            out.push(decode(&item.map_err(err)?)?);
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        out.truncate(limit);
        Ok(out)
    }

    async fn put_recipe(&self, name: &str, bundle: &RecipeBundle) -> Result<(), BuildStoreError> {
        let text = serde_json::to_string(bundle).map_err(|e| corrupt(name, e))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("RECIPE#{name}")))
            .item("sk", s("RECIPE"))
            .item("bundle", s(text))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn get_recipe(&self, name: &str) -> Result<Option<RecipeBundle>, BuildStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("RECIPE#{name}")))
            .key("sk", s("RECIPE"))
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        match out.item.as_ref().and_then(|i| i.get("bundle")) {
            Some(AttributeValue::S(text)) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| corrupt(name, e)),
            _ => Ok(None),
        }
    }

    async fn delete_recipe(&self, name: &str) -> Result<(), BuildStoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("RECIPE#{name}")))
            .key("sk", s("RECIPE"))
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }
}
