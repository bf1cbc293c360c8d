//! Authorization: closures, declarative field roles.

use serde_json::{Map, Value, json};
use subs_security::{AllowAll, Authorizer, FieldRoles, Principal, Rejection, SubscribeRequest};

fn req<'a>(p: &'a Principal, field: &'a str, args: &'a Map<String, Value>) -> SubscribeRequest<'a> {
    SubscribeRequest {
        principal: p,
        root_field: field,
        arguments: args,
    }
}

#[test]
fn field_roles_allow_any_listed_role_and_refuse_others() {
    let rules = FieldRoles::new()
        .require("adminEvents", ["admin", "ops"])
        .require("nobody", Vec::<String>::new());
    let args = Map::new();
    let admin = Principal::new("a").with_roles(["admin"]);
    let ops = Principal::new("o").with_roles(["ops"]);
    let user = Principal::new("u").with_roles(["user"]);
    assert_eq!(rules.authorize(&req(&admin, "adminEvents", &args)), Ok(()));
    assert_eq!(rules.authorize(&req(&ops, "adminEvents", &args)), Ok(()));
    assert_eq!(
        rules.authorize(&req(&user, "adminEvents", &args)),
        Err(Rejection::graphql("not authorized to access `adminEvents`"))
    );
    assert!(rules.authorize(&req(&admin, "nobody", &args)).is_err());
    // Unlisted fields are allowed by default...
    assert_eq!(rules.authorize(&req(&user, "orderUpdated", &args)), Ok(()));
    // ...and refused with deny_unlisted.
    let strict = rules.deny_unlisted();
    assert_eq!(
        strict.authorize(&req(&user, "orderUpdated", &args)),
        Err(Rejection::graphql(
            "not authorized to access `orderUpdated`"
        ))
    );
    assert_eq!(strict.authorize(&req(&admin, "adminEvents", &args)), Ok(()));
}

#[test]
fn closures_see_principal_field_and_arguments() {
    let own_orders_only = |r: &SubscribeRequest<'_>| {
        let owner = r.arguments.get("userId").and_then(Value::as_str);
        if owner == Some(r.principal.id.as_str()) {
            Ok(())
        } else {
            Err(Rejection::graphql("only your own orders"))
        }
    };
    let alice = Principal::new("alice");
    let mine = json!({"userId": "alice"}).as_object().unwrap().clone();
    let theirs = json!({"userId": "bob"}).as_object().unwrap().clone();
    assert_eq!(
        own_orders_only.authorize(&req(&alice, "orders", &mine)),
        Ok(())
    );
    assert_eq!(
        own_orders_only.authorize(&req(&alice, "orders", &theirs)),
        Err(Rejection::graphql("only your own orders"))
    );
    let boxed: Box<dyn Authorizer> = Box::new(own_orders_only);
    assert!(boxed.authorize(&req(&alice, "orders", &mine)).is_ok());
}

#[test]
fn allow_all_allows() {
    let args = Map::new();
    assert_eq!(
        AllowAll.authorize(&req(&Principal::anonymous(), "x", &args)),
        Ok(())
    );
}
