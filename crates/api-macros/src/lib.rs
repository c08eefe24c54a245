//! `#[funnel_api::params]`: one declaration per plugin parameter.
//!
//! ```ignore
//! /// Parameters of `uniform`.
//! #[funnel_api::params]
//! #[derive(Debug, Clone)]
//! pub struct UniformParams {
//!     /// Shared negatives per batch.
//!     #[param(default = 1000)]
//!     pub num_negatives: usize,
//! }
//! ```
//!
//! The field's doc comment, its `#[param(default = ...)]` and its type are the
//! only declaration. From them the attribute writes: `serde(default,
//! deny_unknown_fields)` on the struct, its `Default` impl, the
//! `funnel_api::Params` impl whose `DOCS` the registry prints in `funnel
//! plugins`, and a "Default:" line appended to each field's rustdoc; an
//! `f32` field serializes as its shortest decimal. A field
//! without `#[param(default)]` takes its type's `Default`; a string literal
//! default is converted with `Into` (so `"ml-1m"` fills a `String`). A
//! field without a doc comment is a compile error: every parameter is
//! documented.
//!
//! `#[funnel_api::params(unused = path::to_fn)]` names a
//! `fn(&Self) -> Vec<&'static str>` listing the keys a value leaves unused
//! (a GRU's sizes when the encoder averages), so trackers leave them out.
//!
//! A proc macro rather than `macro_rules!`: a declarative macro cannot tell
//! a field's doc attributes from its serde attributes without ambiguity, and
//! could not join the doc lines into one string at compile time.

#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::quote;
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Expr, Fields, Lit, Meta};

#[proc_macro_attribute]
pub fn params(args: TokenStream, item: TokenStream) -> TokenStream {
    let unused = if args.is_empty() {
        None
    } else {
        match syn::parse::<syn::MetaNameValue>(args) {
            Ok(nv) if nv.path.is_ident("unused") => Some(nv.value),
            _ => {
                return syn::Error::new(Span::call_site(), "expected #[params] or #[params(unused = path::to_fn)]")
                    .to_compile_error()
                    .into()
            }
        }
    };
    let input = parse_macro_input!(item as DeriveInput);
    match expand(input, unused) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Param {
    key: String,
    doc: String,
}

fn expand(mut input: DeriveInput, unused: Option<Expr>) -> syn::Result<TokenStream2> {
    let name = input.ident.clone();
    let Data::Struct(data) = &mut input.data else {
        return Err(syn::Error::new_spanned(&input.ident, "#[params] applies to a struct with named fields"));
    };
    let Fields::Named(fields) = &mut data.fields else {
        return Err(syn::Error::new_spanned(&input.ident, "#[params] applies to a struct with named fields"));
    };
    let mut params = Vec::new();
    let mut initialisers = Vec::new();
    for field in &mut fields.named {
        let ident = field.ident.clone().expect("named field");
        let mut default = None;
        let mut kept = Vec::new();
        for attr in field.attrs.drain(..) {
            if attr.path().is_ident("param") {
                default = Some(parse_param(&attr)?);
            } else {
                kept.push(attr);
            }
        }
        field.attrs = kept;
        let doc = doc_text(&field.attrs);
        if doc.is_empty() {
            return Err(syn::Error::new_spanned(&ident, "every parameter needs a doc comment: say what it does"));
        }
        if is_f32(&field.ty) {
            // Written as the shortest decimal that reads back as the same f32
            // (0.1, not 0.10000000149011612) in resolved.toml, reports and MLflow.
            field.attrs.push(syn::parse_quote!(#[serde(serialize_with = "::funnel_api::serialize_f32")]));
        }
        let key = serde_rename(&field.attrs)?.unwrap_or_else(|| ident.to_string().trim_start_matches("r#").to_string());
        let shown = match &default {
            Some(tokens) => format!(" Default: `{tokens}`."),
            None => " Default: the type's `Default`.".to_string(),
        };
        field.attrs.push(syn::parse_quote!(#[doc = ""]));
        field.attrs.push(syn::parse_quote!(#[doc = #shown]));
        let value = match &default {
            Some(tokens) if is_string_literal(tokens) => quote!(::core::convert::Into::into(#tokens)),
            Some(tokens) => tokens.clone(),
            None => quote!(::core::default::Default::default()),
        };
        initialisers.push(quote!(#ident: #value));
        params.push(Param { key, doc });
    }
    input.attrs.push(syn::parse_quote!(#[serde(default, deny_unknown_fields)]));
    let docs = params.iter().map(|p| {
        let (key, doc) = (&p.key, &p.doc);
        quote!(::funnel_api::ParamDoc::new(#key, #doc))
    });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let unused = unused.map(|f| {
        quote! {
            fn unused(&self) -> ::std::vec::Vec<&'static str> {
                (#f)(self)
            }
        }
    });
    Ok(quote! {
        #input

        impl #impl_generics ::core::default::Default for #name #ty_generics #where_clause {
            fn default() -> Self {
                #name { #(#initialisers),* }
            }
        }

        impl #impl_generics ::funnel_api::Params for #name #ty_generics #where_clause {
            const DOCS: &'static [::funnel_api::ParamDoc] = &[#(#docs),*];
            #unused
        }
    })
}

/// The tokens after `default =` in `#[param(default = ...)]`.
fn parse_param(attr: &Attribute) -> syn::Result<TokenStream2> {
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, "expected #[param(default = <expression>)]"));
    };
    let mut tokens = list.tokens.clone().into_iter();
    match (tokens.next(), tokens.next()) {
        (Some(TokenTree::Ident(id)), Some(TokenTree::Punct(eq))) if id == "default" && eq.as_char() == '=' => {
            let rest: TokenStream2 = tokens.collect();
            if rest.is_empty() {
                return Err(syn::Error::new_spanned(attr, "expected an expression after `default =`"));
            }
            Ok(rest)
        }
        _ => Err(syn::Error::new_spanned(attr, "expected #[param(default = <expression>)]")),
    }
}

fn is_f32(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("f32"))
}

fn is_string_literal(tokens: &TokenStream2) -> bool {
    let mut it = tokens.clone().into_iter();
    matches!((it.next(), it.next()), (Some(TokenTree::Literal(l)), None) if l.to_string().starts_with('"'))
}

/// The doc comment as prose: lines trimmed and joined by spaces, paragraphs
/// by a newline.
fn doc_text(attrs: &[Attribute]) -> String {
    let mut paragraphs: Vec<String> = vec![String::new()];
    for attr in attrs {
        let Meta::NameValue(nv) = &attr.meta else { continue };
        if !nv.path.is_ident("doc") {
            continue;
        }
        let Expr::Lit(lit) = &nv.value else { continue };
        let Lit::Str(s) = &lit.lit else { continue };
        let line = s.value();
        let line = line.trim();
        let current = paragraphs.last_mut().expect("one paragraph");
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(String::new());
            }
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(line);
        }
    }
    paragraphs.retain(|p| !p.is_empty());
    paragraphs.join("\n")
}

/// `#[serde(rename = "...")]` on a field: the TOML key differs from the field.
fn serde_rename(attrs: &[Attribute]) -> syn::Result<Option<String>> {
    let mut rename = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let value: syn::LitStr = meta.value()?.parse()?;
                rename = Some(value.value());
            } else if meta.input.peek(syn::Token![=]) {
                // serde's other `key = "value"` attributes: skip the value.
                let _: Lit = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let _content;
                syn::parenthesized!(_content in meta.input);
            }
            Ok(())
        })?;
    }
    Ok(rename)
}
