//! `#[derive(Header)]` for pos-p2p stream headers.
//!
//! Use it through `pos_p2p` (`use pos_p2p::Header;` brings both the trait
//! and the derive). Every variant of an enum names its tag, every field
//! whose size depends on the peer names its limit, and the mistakes that
//! would break compatibility or let a peer make the receiver allocate
//! without bound are compile errors:
//!
//! - a variant without `#[header(tag = N)]`, or two variants with one tag;
//! - a `String`, `Vec<u8>` or list field without `#[header(max = N)]` (and
//!   a list of strings or byte strings without `item_max`); a limit is any
//!   `usize` expression, a constant shared with hand-written code for
//!   example;
//! - a field type the codec has no encoding for;
//! - a `requires` that is not a semver version requirement.
//!
//! ```text
//! use pos_p2p::Header;
//!
//! #[derive(Header)]
//! #[header(max_len = 1024)]               // optional: Header::MAX_LEN
//! enum AppHeader {
//!     #[header(tag = 0)]
//!     Ping,
//!     #[header(tag = 1, operation = "file", requires = ">=1.5")]
//!     File {
//!         id: [u8; 16],
//!         #[header(max = 255)]
//!         name: String,
//!         #[header(varint)]
//!         offset: u64,
//!     },
//!     #[header(tag = 2)]
//!     Tags(#[header(max = 16, item_max = 64)] Vec<String>),
//! }
//! ```
//!
//! The encoding is the codec's (docs/PROTOCOL.md §2): an enum writes its
//! variant's tag as a varint, then each field in order: `u8`, `u16`,
//! `u32`, `u64` big-endian (`u64` as a varint with `varint`), `bool` as one
//! byte, `[u8; N]` as its bytes, `String` and `Vec<u8>` with a varint
//! length, `Option<T>` as a bool then `T`, `Vec<T>` as a varint count then
//! each item. A struct writes its fields, without a tag. An unknown tag
//! decodes to the codec's typed error, which receivers answer with
//! `UNKNOWN_OPERATION`. `operation()` is the variant's name in
//! snake_case unless named; `requires()` is the variant's requirement.
//!
//! The generated code names the codec as `::pos_p2p`; an application that
//! uses the sans-IO core alone sets `#[header(crate = pos_p2p_protocol)]`.

use std::collections::HashMap;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, Expr, Fields, GenericArgument, Ident, LitInt, LitStr, Path,
    PathArguments, Type, parse_macro_input,
};

/// Implement `pos_p2p::Header` for an enum (one tagged variant per
/// operation) or a struct (one record). See the [crate docs](crate).
#[proc_macro_derive(Header, attributes(header))]
pub fn derive_header(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// What the container's `#[header(...)]` says.
#[derive(Default)]
struct ContainerAttrs {
    max_len: Option<Expr>,
    krate: Option<Path>,
    operation: Option<LitStr>,
    requires: Option<LitStr>,
}

/// What a variant's `#[header(...)]` says.
#[derive(Default)]
struct VariantAttrs {
    tag: Option<(u64, Span)>,
    operation: Option<LitStr>,
    requires: Option<LitStr>,
}

/// What a field's `#[header(...)]` says.
#[derive(Default, Clone)]
struct FieldAttrs {
    max: Option<Expr>,
    item_max: Option<Expr>,
    varint: bool,
}

fn header_attrs(
    attrs: &[Attribute],
    mut each: impl FnMut(syn::meta::ParseNestedMeta<'_>) -> syn::Result<()>,
) -> syn::Result<()> {
    for attr in attrs {
        if attr.path().is_ident("header") {
            attr.parse_nested_meta(&mut each)?;
        }
    }
    Ok(())
}

fn container_attrs(attrs: &[Attribute], is_struct: bool) -> syn::Result<ContainerAttrs> {
    let mut out = ContainerAttrs::default();
    header_attrs(attrs, |meta| {
        if meta.path.is_ident("max_len") {
            out.max_len = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("crate") {
            out.krate = Some(meta.value()?.parse()?);
        } else if is_struct && meta.path.is_ident("operation") {
            out.operation = Some(meta.value()?.parse()?);
        } else if is_struct && meta.path.is_ident("requires") {
            out.requires = Some(checked_requirement(meta.value()?.parse()?)?);
        } else {
            return Err(meta.error(if is_struct {
                "expected `max_len`, `crate`, `operation` or `requires`"
            } else {
                "expected `max_len` or `crate` (tags, operations and requirements go on the variants)"
            }));
        }
        Ok(())
    })?;
    Ok(out)
}

fn variant_attrs(attrs: &[Attribute]) -> syn::Result<VariantAttrs> {
    let mut out = VariantAttrs::default();
    header_attrs(attrs, |meta| {
        if meta.path.is_ident("tag") {
            let lit: LitInt = meta.value()?.parse()?;
            out.tag = Some((lit.base10_parse::<u64>()?, lit.span()));
        } else if meta.path.is_ident("operation") {
            out.operation = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("requires") {
            out.requires = Some(checked_requirement(meta.value()?.parse()?)?);
        } else {
            return Err(meta.error("expected `tag`, `operation` or `requires`"));
        }
        Ok(())
    })?;
    Ok(out)
}

fn field_attrs(attrs: &[Attribute]) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    header_attrs(attrs, |meta| {
        if meta.path.is_ident("max") {
            out.max = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("item_max") {
            out.item_max = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("varint") {
            out.varint = true;
        } else {
            return Err(meta.error("expected `max`, `item_max` or `varint`"));
        }
        Ok(())
    })?;
    Ok(out)
}

/// A `requires` must parse as a semver requirement now, not at run time.
fn checked_requirement(lit: LitStr) -> syn::Result<LitStr> {
    match semver::VersionReq::parse(&lit.value()) {
        Ok(_) => Ok(lit),
        Err(error) => Err(syn::Error::new(
            lit.span(),
            format!("not a semver version requirement: {error}"),
        )),
    }
}

/// `FileChunk` → `file_chunk`.
fn snake_case(ident: &Ident) -> String {
    let mut out = String::new();
    for (i, c) in ident.to_string().chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(Header)] does not support generic types: implement Header by hand",
        ));
    }
    let name = &input.ident;
    let name_text = name.to_string();
    let is_struct = matches!(input.data, Data::Struct(_));
    let container = container_attrs(&input.attrs, is_struct)?;
    let krate = container
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::pos_p2p));
    let codec = quote!(#krate::codec);
    let max_len = container
        .max_len
        .as_ref()
        .map(|n| quote!(const MAX_LEN: usize = #n;));
    let requirement = |lit: &Option<LitStr>| match lit {
        // Checked at compile time, so `ok()` is always `Some`.
        Some(req) => quote! {
            #krate::semver::VersionReq::parse(#req).ok()
        },
        None => quote!(::core::option::Option::None),
    };

    let (encode, decode, operation, requires) = match &input.data {
        Data::Struct(data) => {
            let (pattern, writes, reads) = fields(&data.fields)?;
            let operation = container
                .operation
                .as_ref()
                .map_or_else(|| snake_case(name), LitStr::value);
            let requires = requirement(&container.requires);
            (
                quote! { let Self #pattern = self; #(#writes)* },
                quote! { ::core::result::Result::Ok(Self #reads) },
                quote! { #operation },
                requires,
            )
        }
        Data::Enum(data) => {
            if data.variants.is_empty() {
                return Err(syn::Error::new(
                    name.span(),
                    "a header enum needs at least one variant",
                ));
            }
            let mut seen: HashMap<u64, &Ident> = HashMap::new();
            let (mut encode_arms, mut decode_arms) = (Vec::new(), Vec::new());
            let (mut operation_arms, mut requires_arms) = (Vec::new(), Vec::new());
            for variant in &data.variants {
                let attrs = variant_attrs(&variant.attrs)?;
                let ident = &variant.ident;
                let Some((tag, tag_span)) = attrs.tag else {
                    return Err(syn::Error::new(
                        ident.span(),
                        format!(
                            "the variant `{ident}` needs a tag: #[header(tag = N)] \
                             (tags are the wire format: never reuse or renumber one)"
                        ),
                    ));
                };
                if let Some(first) = seen.insert(tag, ident) {
                    return Err(syn::Error::new(
                        tag_span,
                        format!(
                            "tag {tag} is used by `{first}` already: every variant needs its own"
                        ),
                    ));
                }
                let (pattern, writes, reads) = fields(&variant.fields)?;
                let wildcard = match &variant.fields {
                    Fields::Named(_) => quote!({ .. }),
                    Fields::Unnamed(_) => quote!((..)),
                    Fields::Unit => quote!(),
                };
                encode_arms.push(quote! {
                    Self::#ident #pattern => {
                        w.tag(#tag);
                        #(#writes)*
                    }
                });
                decode_arms.push(quote! {
                    #tag => ::core::result::Result::Ok(Self::#ident #reads),
                });
                let operation = attrs
                    .operation
                    .as_ref()
                    .map_or_else(|| snake_case(ident), LitStr::value);
                operation_arms.push(quote! { Self::#ident #wildcard => #operation, });
                let requires = requirement(&attrs.requires);
                requires_arms.push(quote! { Self::#ident #wildcard => #requires, });
            }
            (
                quote! { match self { #(#encode_arms)* } },
                quote! {
                    match r.tag()? {
                        #(#decode_arms)*
                        tag => ::core::result::Result::Err(r.unknown_tag(#name_text, tag)),
                    }
                },
                quote! { match self { #(#operation_arms)* } },
                quote! { match self { #(#requires_arms)* } },
            )
        }
        Data::Union(_) => {
            return Err(syn::Error::new(
                name.span(),
                "#[derive(Header)] supports enums and structs",
            ));
        }
    };

    Ok(quote! {
        #[automatically_derived]
        impl #krate::Header for #name {
            #max_len

            fn encode(&self, w: &mut #codec::Writer) {
                #encode
            }

            fn decode(
                r: &mut #codec::Reader<'_>,
            ) -> ::core::result::Result<Self, #codec::DecodeError> {
                #decode
            }

            fn operation(&self) -> &'static str {
                #operation
            }

            fn requires(&self) -> ::core::option::Option<#krate::semver::VersionReq> {
                #requires
            }
        }
    })
}

/// For a variant's (or struct's) fields: the pattern that binds them (as
/// references), the statements that write them, and the constructor that
/// reads them in order.
fn fields(fields: &Fields) -> syn::Result<(TokenStream2, Vec<TokenStream2>, TokenStream2)> {
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    let mut names = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let attrs = field_attrs(&field.attrs)?;
        let binding = field
            .ident
            .clone()
            .unwrap_or_else(|| format_ident!("field_{}", i));
        writes.push(encode(&field.ty, &quote!(#binding), &attrs)?);
        let read = decode(&field.ty, &attrs)?;
        reads.push(quote!(#read?));
        names.push(binding);
    }
    Ok(match fields {
        Fields::Named(_) => (
            quote!({ #(#names),* }),
            writes,
            quote!({ #(#names: #reads),* }),
        ),
        Fields::Unnamed(_) => (quote!((#(#names),*)), writes, quote!((#(#reads),*))),
        Fields::Unit => (quote!(), writes, quote!()),
    })
}

/// The codec's name for a supported type.
enum Kind<'a> {
    Int(&'static str),
    Bool,
    Array,
    String,
    Bytes,
    Option(&'a Type),
    List(&'a Type),
}

fn kind(ty: &Type) -> syn::Result<Kind<'_>> {
    let unsupported = || {
        syn::Error::new(
            ty.span(),
            "unsupported field type for #[derive(Header)]: use u8, u16, u32, u64, bool, \
             [u8; N], String, Vec<u8>, Option<T> or Vec<T> of these, or implement Header by hand",
        )
    };
    match ty {
        Type::Array(array) => match &*array.elem {
            Type::Path(elem) if elem.path.is_ident("u8") => Ok(Kind::Array),
            _ => Err(unsupported()),
        },
        Type::Path(path) if path.qself.is_none() => {
            let Some(last) = path.path.segments.last() else {
                return Err(unsupported());
            };
            let inner = || match &last.arguments {
                PathArguments::AngleBracketed(args) if args.args.len() == 1 => {
                    match args.args.first() {
                        Some(GenericArgument::Type(inner)) => Ok(inner),
                        _ => Err(unsupported()),
                    }
                }
                _ => Err(unsupported()),
            };
            match last.ident.to_string().as_str() {
                int @ ("u8" | "u16" | "u32" | "u64") if last.arguments.is_empty() => {
                    Ok(Kind::Int(match int {
                        "u8" => "u8",
                        "u16" => "u16",
                        "u32" => "u32",
                        _ => "u64",
                    }))
                }
                "bool" if last.arguments.is_empty() => Ok(Kind::Bool),
                "String" if last.arguments.is_empty() => Ok(Kind::String),
                "Option" => Ok(Kind::Option(inner()?)),
                "Vec" => {
                    let inner = inner()?;
                    match inner {
                        Type::Path(p) if p.path.is_ident("u8") => Ok(Kind::Bytes),
                        _ => Ok(Kind::List(inner)),
                    }
                }
                _ => Err(unsupported()),
            }
        }
        _ => Err(unsupported()),
    }
}

/// The limit a variable-length field needs, or the compile error.
fn limit<'a>(max: &'a Option<Expr>, ty: &Type, what: &str, attr: &str) -> syn::Result<&'a Expr> {
    max.as_ref().ok_or_else(|| {
        syn::Error::new(
            ty.span(),
            format!(
                "{what} needs a limit: #[header({attr} = N)] (the most the receiver accepts; \
                 a peer cannot make it allocate more)"
            ),
        )
    })
}

/// The attributes that apply to the items of a list: `item_max` becomes
/// their `max`.
fn item_attrs(attrs: &FieldAttrs) -> FieldAttrs {
    FieldAttrs {
        max: attrs.item_max.clone(),
        item_max: None,
        varint: attrs.varint,
    }
}

/// Statements writing `value` (a reference to a `ty`) to `w`. (Generated
/// with the macro's own spans, so that lints judge it as macro output.)
fn encode(ty: &Type, value: &TokenStream2, attrs: &FieldAttrs) -> syn::Result<TokenStream2> {
    Ok(match kind(ty)? {
        Kind::Int("u64") if attrs.varint => quote!(w.varint(*#value);),
        Kind::Int(int) => {
            if attrs.varint {
                return Err(syn::Error::new(ty.span(), "`varint` applies to u64 fields"));
            }
            let method = format_ident!("{}", int);
            quote!(w.#method(*#value);)
        }
        Kind::Bool => quote!(w.bool(*#value);),
        Kind::Array => quote!(w.raw(&#value[..]);),
        Kind::String => {
            let max = limit(&attrs.max, ty, "a `String` field", "max")?;
            quote!(w.str(#value, #max);)
        }
        Kind::Bytes => {
            let max = limit(&attrs.max, ty, "a `Vec<u8>` field", "max")?;
            quote!(w.bytes(#value, #max);)
        }
        Kind::Option(inner) => {
            let write = encode(inner, &quote!(item), attrs)?;
            quote!(w.option(#value.as_ref(), |w, item| { #write });)
        }
        Kind::List(inner) => {
            let max = limit(&attrs.max, ty, "a list field", "max")?;
            let write = encode(inner, &quote!(item), &item_attrs(attrs))
                .map_err(|e| retarget(e, "item_max"))?;
            quote!(w.list(#value, #max, |w, item| { #write });)
        }
    })
}

/// An expression reading a `ty` from `r`, as a `Result`.
fn decode(ty: &Type, attrs: &FieldAttrs) -> syn::Result<TokenStream2> {
    Ok(match kind(ty)? {
        Kind::Int("u64") if attrs.varint => quote!(r.varint()),
        Kind::Int(int) => {
            let method = format_ident!("{}", int);
            quote!(r.#method())
        }
        Kind::Bool => quote!(r.bool()),
        // The length comes from the field's type.
        Kind::Array => quote!(r.array()),
        Kind::String => {
            let max = limit(&attrs.max, ty, "a `String` field", "max")?;
            quote!(r.string(#max))
        }
        Kind::Bytes => {
            let max = limit(&attrs.max, ty, "a `Vec<u8>` field", "max")?;
            quote!(r.bytes(#max).map(<[u8]>::to_vec))
        }
        Kind::Option(inner) => {
            let read = decode(inner, attrs)?;
            quote!(r.option(|r| #read))
        }
        Kind::List(inner) => {
            let max = limit(&attrs.max, ty, "a list field", "max")?;
            let read = decode(inner, &item_attrs(attrs)).map_err(|e| retarget(e, "item_max"))?;
            quote!(r.list(#max, |r| #read))
        }
    })
}

/// A list item's missing limit is the list field's `item_max`.
fn retarget(error: syn::Error, attr: &str) -> syn::Error {
    let message = error.to_string();
    if message.contains("#[header(max = N)]") {
        syn::Error::new(
            error.span(),
            message.replace(
                "#[header(max = N)]",
                &format!("#[header({attr} = N)] on the list"),
            ),
        )
    } else {
        error
    }
}
