use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub order_id: i64,
    #[sea_orm(unique)]
    pub correlation_id: Uuid,
    pub customer_id: String,
    pub currency: String,
    #[sea_orm(column_type = "Decimal(Some((24, 4)))")]
    pub total: Decimal,
    pub identity_subject: Option<String>,
    pub identity_claims: Option<Json>,
    pub accepted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::order_items::Entity")]
    Items,
}

impl Related<super::order_items::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Items.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
