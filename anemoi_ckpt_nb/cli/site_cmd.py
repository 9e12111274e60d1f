"""``anemoi-ckpt site add|ls|rm|name-catalogue``: describe the sites that hold copies."""

from __future__ import annotations

import argparse

from anemoi_ckpt_nb.cli._catalogue import add_catalogue_option, open_catalogue


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "site",
        help="describe the sites (S3 endpoints, shared file systems) that hold copies of checkpoints",
        description="Sites are described once in the catalogue's catalogue.json: a name, where copies go "
        "(s3://bucket/prefix or a path prefix) and, for S3, the endpoint URL and the AWS profile name. "
        "Credentials are never stored: each user's AWS configuration provides them for that profile.",
    )
    actions = parser.add_subparsers(dest="site_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="describe a site: site add NAME --s3 URL | --path DIR")
    add.add_argument("name", metavar="NAME", help="site name, e.g. leonardo")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--s3", metavar="URL", help="s3://bucket/prefix where the site keeps copies")
    where.add_argument("--path", metavar="DIR", help="absolute folder on the site's shared file system")
    add.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint of the site (default: your AWS configuration)")
    add.add_argument("--profile", metavar="NAME", help="AWS profile whose credentials reach the site (only the name is stored)")
    add.add_argument("--description", metavar="TEXT", help="free text shown by `site ls`")
    add.add_argument("--replace", action="store_true", help="overwrite a site of the same name")
    add_catalogue_option(add)
    ls = actions.add_parser("ls", help="list the sites, the catalogue's own first")
    ls.add_argument("--json", action="store_true", help="print the sites as JSON")
    add_catalogue_option(ls)
    rm = actions.add_parser("rm", help="remove a site's description (refused while copies are recorded there)")
    rm.add_argument("name", metavar="NAME", help="the site to forget")
    rm.add_argument("--force", action="store_true", help="remove even if copies are recorded there")
    add_catalogue_option(rm)
    name = actions.add_parser("name-catalogue", help="give the catalogue's own storage a site name (default: catalogue)")
    name.add_argument("name", metavar="NAME", help="the site name of the catalogue's own storage, e.g. ecmwf")
    add_catalogue_option(name)


def run(args: argparse.Namespace) -> int:
    catalogue = open_catalogue(args)
    if args.site_action == "add":
        site = catalogue.add_site(
            args.name, s3=args.s3, path=args.path, endpoint_url=args.endpoint_url,
            profile=args.profile, description=args.description, replace=args.replace,
        )
        print(f"site {site.name}: {site.kind} {site.url}")
    elif args.site_action == "rm":
        catalogue.remove_site(args.name, force=args.force)
        print(f"site {args.name} removed")
    elif args.site_action == "name-catalogue":
        catalogue.name_catalogue_site(args.name)
        print(f"the catalogue's own storage is now site {args.name}")
    else:
        rows = catalogue.sites()
        if args.json:
            import json

            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            extra = [f"{k}={row[k]}" for k in ("endpoint_url", "profile") if row.get(k)]
            mark = "  (this machine: ANEMOI_CKPT_SITE)" if row["local"] else ""
            description = f"  \"{row['description']}\"" if row.get("description") else ""
            print("  ".join([row["name"], row["kind"], row["url"], *extra]) + description + mark)
    return 0
